package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"go.uber.org/goleak"

	"github.com/edgebridge/gateway/internal/mqtttest"
	"github.com/edgebridge/gateway/internal/testpki"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a log sink safe for the gateway's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running is an in-process gateway started through the real command line.
type running struct {
	g    *gateway
	log  *syncBuffer
	hup  chan os.Signal
	stop func() int // cancels and returns the exit code
}

// startGateway runs `gateway ARGS` in-process with every listener on a free
// loopback port unless ARGS say otherwise, and memory-only storage unless
// --data-dir is given.
func startGateway(t *testing.T, args ...string) *running {
	t.Helper()
	base := []string{"--mqtt-addr", "127.0.0.1:0", "--ws-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--coap-addr", "127.0.0.1:0", "--data-dir", "", "--log-level", "debug"}
	log := &syncBuffer{}
	hup := make(chan os.Signal, 1)
	ready := make(chan *gateway, 1)
	c := &cli{stdout: log, stderr: log, getenv: func(string) (string, bool) { return "", false }, hup: hup,
		onReady: func(g *gateway) { ready <- g }}
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() { code <- c.run(ctx, append([]string{"run"}, append(base, args...)...)) }()
	r := &running{log: log, hup: hup}
	var once sync.Once
	exit := -1
	r.stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case exit = <-code:
			case <-time.After(15 * time.Second):
				t.Errorf("gateway did not stop within 15s\n%s", log)
			}
		})
		return exit
	}
	select {
	case r.g = <-ready:
	case ec := <-code:
		cancel()
		t.Fatalf("gateway exited with %d before ready:\n%s", ec, log)
	case <-time.After(15 * time.Second):
		cancel()
		t.Fatalf("gateway not ready within 15s:\n%s", log)
	}
	t.Cleanup(func() {
		if ec := r.stop(); ec != 0 {
			t.Errorf("gateway exit code %d, want 0\n%s", ec, log)
		}
	})
	return r
}

// mqttAddr is the bound address of the first listener of kind.
func (r *running) mqttAddr(t *testing.T, kind string) string {
	t.Helper()
	for _, a := range r.g.broker.Addrs() {
		if a.Kind == kind {
			return a.Address
		}
	}
	t.Fatalf("no %s listener", kind)
	return ""
}

func TestMQTT5PubSubAllQoS(t *testing.T) {
	r := startGateway(t)
	addr := r.mqttAddr(t, "tcp")
	sub := mqtttest.Dial(t, addr, mqtttest.Options{ClientID: "sub5"})
	sub.Sub("t/#", 2)
	pub := mqtttest.Dial(t, addr, mqtttest.Options{ClientID: "pub5"})
	for qos := byte(0); qos <= 2; qos++ {
		pub.Pub(&paho.Publish{Topic: fmt.Sprintf("t/%d", qos), QoS: qos, Payload: []byte{qos},
			Properties: &paho.PublishProperties{ContentType: "application/octet-stream"}})
		m := sub.Next()
		if m.Topic != fmt.Sprintf("t/%d", qos) || m.QoS != qos || !bytes.Equal(m.Payload, []byte{qos}) ||
			m.Properties.ContentType != "application/octet-stream" {
			t.Fatalf("qos %d: got %+v", qos, m)
		}
	}
}

func TestMQTT311PubSubAllQoS(t *testing.T) {
	r := startGateway(t)
	addr := r.mqttAddr(t, "tcp")
	sub := mqtttest.Dial3(t, addr, "sub3", false)
	sub.Sub("t/#", 2)
	pub := mqtttest.Dial3(t, addr, "pub3", false)
	for qos := byte(0); qos <= 2; qos++ {
		pub.Pub(fmt.Sprintf("t/%d", qos), qos, false, []byte("v3"))
		m := sub.Next()
		if m.Topic() != fmt.Sprintf("t/%d", qos) || m.Qos() != qos || string(m.Payload()) != "v3" {
			t.Fatalf("qos %d: got %s qos %d %q", qos, m.Topic(), m.Qos(), m.Payload())
		}
	}
}

func TestRetainedReachesLaterSubscriber(t *testing.T) {
	r := startGateway(t)
	addr := r.mqttAddr(t, "tcp")
	pub := mqtttest.Dial3(t, addr, "pub", false)
	pub.Pub("state/lamp", 1, true, []byte("on"))
	sub := mqtttest.Dial(t, addr, mqtttest.Options{ClientID: "late"})
	sub.Sub("state/+", 1)
	m := sub.Next()
	if m.Topic != "state/lamp" || string(m.Payload) != "on" || !m.Retain {
		t.Fatalf("got %s %q retain=%v", m.Topic, m.Payload, m.Retain)
	}
}

func TestWebSocketListener(t *testing.T) {
	r := startGateway(t)
	ws := "ws://" + r.mqttAddr(t, "ws") + "/mqtt"
	sub := mqtttest.Dial(t, "", mqtttest.Options{ClientID: "wssub", Dialer: mqtttest.WebSocket(ws)})
	sub.Sub("ws/#", 1)
	pub := mqtttest.Dial(t, r.mqttAddr(t, "tcp"), mqtttest.Options{ClientID: "tcppub"})
	pub.Pub(&paho.Publish{Topic: "ws/x", QoS: 1, Payload: []byte("over websocket")})
	if m := sub.Next(); string(m.Payload) != "over websocket" {
		t.Fatalf("got %q", m.Payload)
	}
}

func TestTLSListenerWithClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t)
	cert, key, caFile := ca.WriteFiles(dir, "server-", ca.Server())
	cfg := filepath.Join(dir, "gateway.yaml")
	writeFile(t, cfg, fmt.Sprintf(`mqtt:
  listeners:
    - address: "127.0.0.1:0"
    - address: "127.0.0.1:0"
      tls: {cert: %s, key: %s, client_ca: %s}
`, cert, key, caFile))
	r := startGateway(t, "-c", cfg, "--ws-addr", "")
	addr := r.mqttAddr(t, "tls")
	good := &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{ca.Client("device-1")}}
	c := mqtttest.Dial(t, addr, mqtttest.Options{ClientID: "mtls", TLS: good})
	c.Sub("secure/#", 1)
	c.Pub(&paho.Publish{Topic: "secure/a", QoS: 1, Payload: []byte("ok")})
	if m := c.Next(); string(m.Payload) != "ok" {
		t.Fatalf("got %q", m.Payload)
	}
	// Without a client certificate the handshake must fail.
	if _, _, err := mqtttest.DialErr(addr, mqtttest.Options{ClientID: "nocert", TLS: &tls.Config{RootCAs: ca.Pool}}); err == nil {
		t.Fatal("connected over mTLS without a client certificate")
	}
}

func TestPersistentSessionSurvivesRestart(t *testing.T) {
	data := t.TempDir()
	r := startGateway(t, "--data-dir", data)
	addr := r.mqttAddr(t, "tcp")
	sub := mqtttest.Dial(t, addr, mqtttest.Options{ClientID: "keeper", SessionExpiry: 3600})
	sub.Sub("queued/#", 1)
	sub.Close()
	pub := mqtttest.Dial(t, addr, mqtttest.Options{ClientID: "pub"})
	pub.Pub(&paho.Publish{Topic: "queued/1", QoS: 1, Payload: []byte("while away")})
	pub.Pub(&paho.Publish{Topic: "keep/retained", QoS: 1, Retain: true, Payload: []byte("kept")})
	pub.Close()
	if ec := r.stop(); ec != 0 {
		t.Fatalf("exit %d\n%s", ec, r.log)
	}

	r2 := startGateway(t, "--data-dir", data)
	addr = r2.mqttAddr(t, "tcp")
	back := mqtttest.Dial(t, addr, mqtttest.Options{ClientID: "keeper", SessionExpiry: 3600})
	if m := back.Next(); m.Topic != "queued/1" || string(m.Payload) != "while away" {
		t.Fatalf("queued message after restart: %s %q", m.Topic, m.Payload)
	}
	late := mqtttest.Dial(t, addr, mqtttest.Options{ClientID: "late"})
	late.Sub("keep/#", 0)
	if m := late.Next(); string(m.Payload) != "kept" {
		t.Fatalf("retained after restart: %q", m.Payload)
	}
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
