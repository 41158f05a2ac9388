package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/internal/mqtttest"
)

// webhookSink records the bodies POSTed to it.
type webhookSink struct {
	mu     sync.Mutex
	bodies map[string]int
	paths  []string
}

func (s *webhookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	if s.bodies == nil {
		s.bodies = map[string]int{}
	}
	s.bodies[string(b)]++
	s.paths = append(s.paths, r.URL.Path)
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (s *webhookSink) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.bodies)
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestAddEgressInProcess builds a gateway by hand around addEgress (so it
// runs before addAdapters calls it) and sends an MQTT message to a webhook.
func TestAddEgressInProcess(t *testing.T) {
	sink := &webhookSink{}
	srv := httptest.NewServer(sink)
	defer srv.Close()
	file := writeConfig(t, `storage: {path: ""}
routes:
  - name: hook
    subscribe: alerts/{site}
    http_out: {url: "`+srv.URL+`/hooks/{site}", retry: {backoff: 10ms..100ms}}
`)
	l, err := loadConfig(file, Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bridge.New(bridge.Config{Listeners: []bridge.Listener{{Address: "127.0.0.1:0"}}, AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	g := &gateway{log: slog.New(slog.DiscardHandler), cur: l, broker: b}
	reg := prometheus.NewRegistry()
	if err := g.addEgress(l, reg); err != nil {
		t.Fatal(err)
	}
	if len(g.services) != 1 {
		t.Fatalf("%d services", len(g.services))
	}
	ctx := context.Background()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Shutdown(ctx) }()
	if err := g.services[0].Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = g.services[0].Shutdown(ctx) }()
	c := mqtttest.Dial(t, b.Addrs()[0].Address, mqtttest.Options{ClientID: "p"})
	c.Pub(&paho.Publish{Topic: "alerts/north", QoS: 1, Payload: []byte("fire")})
	deadline := time.Now().Add(10 * time.Second)
	for sink.distinct() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("webhook not called")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if sink.paths[0] != "/hooks/north" {
		t.Errorf("path %s", sink.paths[0])
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) == 0 {
		t.Errorf("metrics %v %v", mfs, err)
	}
	if err := g.addEgress(&loaded{cfg: l.cfg, table: nil, file: file}, nil); err != nil || len(g.services) != 1 {
		t.Errorf("no routes: %v, %d services", err, len(g.services))
	}
}

func TestEgressProblemsKeyFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "good.hex"), []byte("00ff\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.hex"), []byte("zz"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := writeConfig(t, `routes:
  - name: good
    subscribe: a/{d}
    coap_out: {url: "coaps://{d}.lan/x", psk: {identity: gw, key_hex_file: `+filepath.Join(dir, "good.hex")+`}}
  - name: missing
    subscribe: b/{d}
    coap_out: {url: "coaps://{d}.lan/x", psk: {identity: gw, key_hex_file: nope.hex}}
  - name: bad
    source: {coap_observe: "coaps://10.0.0.7/t", psk: {identity: gw, key_hex_file: `+filepath.Join(dir, "bad.hex")+`}}
    topic: t
`)
	_, err := loadConfig(file, Overrides{})
	var probs Problems
	if !errors.As(err, &probs) {
		t.Fatalf("loadConfig: %v, want problems", err)
	}
	var got []string
	for _, p := range probs {
		got = append(got, fmt.Sprintf("%d:%d", p.Line, p.Col))
		if !strings.Contains(p.Msg, "key_hex_file") {
			t.Errorf("problem %q does not name key_hex_file", p.Msg)
		}
	}
	if want := "7:76 9:84"; strings.Join(got, " ") != want {
		t.Errorf("positions %v, want %s\n%v", got, want, err)
	}
}

// TestBinaryEgressQueueSurvivesKill9: messages for a webhook that is down
// wait in the durable queue; the gateway is killed with SIGKILL, the
// endpoint comes up, the gateway restarts and delivers every message.
func TestBinaryEgressQueueSurvivesKill9(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hook := ln.Addr().String()
	_ = ln.Close()
	file := writeConfig(t, `routes:
  - name: hook
    subscribe: orders/{id}
    http_out: {url: "http://`+hook+`/orders/{id}", retry: {backoff: 20ms..200ms}, timeout: 1s}
`)
	data := t.TempDir()
	p := startBinary(t, "-c", file, "--data-dir", data)
	if !strings.Contains(p.log.String(), "egress configured") {
		t.Skip("addEgress is not wired into the gateway yet (cmd/gateway/adapters.go)")
	}
	pub := mqtttest.Dial(t, p.addrs["mqtt/tcp"], mqtttest.Options{ClientID: "pub"})
	const n = 40
	for i := range n {
		pub.Pub(&paho.Publish{Topic: fmt.Sprintf("orders/%d", i), QoS: 1, Payload: []byte(fmt.Sprint(i))})
	}
	pub.Close()
	time.Sleep(300 * time.Millisecond) // let some attempts fail
	if err := p.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("kill -9 reported exit 0")
	}

	sink := &webhookSink{}
	srv := httptest.NewUnstartedServer(sink)
	if srv.Listener, err = net.Listen("tcp", hook); err != nil {
		t.Skipf("port %s taken meanwhile: %v", hook, err)
	}
	srv.Start()
	defer srv.Close()
	if sink.distinct() != 0 {
		t.Fatal("delivered before restart")
	}
	p2 := startBinary(t, "-c", file, "--data-dir", data)
	deadline := time.Now().Add(15 * time.Second)
	for sink.distinct() < n {
		if time.Now().After(deadline) {
			t.Fatalf("after kill -9 and restart %d of %d queued messages delivered\n%s", sink.distinct(), n, p2.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := p2.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}
