package httpadapter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/goccy/go-yaml"

	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/bridge/egress"
	"github.com/edgebridge/gateway/internal/mqtttest"
	"github.com/edgebridge/gateway/internal/testwait"
	"github.com/edgebridge/gateway/mapping"
)

// egressEnv is a broker with an MQTT listener and an egress engine.
type egressEnv struct {
	b    *bridge.Broker
	e    *egress.Engine
	mqtt string
}

func egressStart(t *testing.T, routes string, lookup func(string) (string, bool)) *egressEnv {
	t.Helper()
	b, err := bridge.New(bridge.Config{Listeners: []bridge.Listener{{Address: "127.0.0.1:0"}}, AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Shutdown(context.Background()) })
	tab := egressCompile(t, routes, lookup)
	cfg := egress.Config{Broker: b}
	for _, r := range tab.Routes() {
		switch {
		case r.HTTPOut != nil:
			d, err := EgressWebhook(r, EgressOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cfg.Routes = append(cfg.Routes, egress.Route{Name: r.Name, Subscribe: r.Subscribe, Delivery: r.Delivery, Deliverer: d})
		case r.Source != nil:
			s, err := SourcePoll(r, EgressOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cfg.Sources = append(cfg.Sources, egress.SourceRoute{Name: r.Name, Topic: r.Topic.String(), QoS: r.QoS, Retain: r.Retain,
				ContentType: r.ContentType, Source: s, BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
		}
	}
	e, err := egress.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return &egressEnv{b: b, e: e, mqtt: b.Addrs()[0].Address}
}

func egressCompile(t *testing.T, routes string, lookup func(string) (string, bool)) *mapping.Table {
	t.Helper()
	var specs []mapping.RouteSpec
	if err := yaml.UnmarshalWithOptions([]byte(routes), &specs, yaml.Strict()); err != nil {
		t.Fatal(err)
	}
	if lookup == nil {
		lookup = func(string) (string, bool) { return "", false }
	}
	tab, err := mapping.CompileEnv(specs, lookup)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func egressPublish(t *testing.T, b *bridge.Broker, m bridge.Message) {
	t.Helper()
	if err := b.Publish(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

type hookCall struct {
	method, path, query string
	header              http.Header
	body                string
}

// hookServer records requests and answers with status (204 by default).
type hookServer struct {
	*httptest.Server
	mu     sync.Mutex
	calls  []hookCall
	status func(n int) int // n counts calls from 1
}

func newHookServer(t *testing.T, status func(n int) int) *hookServer {
	h := &hookServer{status: status}
	h.Server = httptest.NewServer(h)
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.calls = append(h.calls, hookCall{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Clone(), string(body)})
	n := len(h.calls)
	h.mu.Unlock()
	code := http.StatusNoContent
	if h.status != nil {
		code = h.status(n)
	}
	if code == http.StatusOK || code >= 400 {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		fmt.Fprintf(w, "answer %d to %s", n, body)
		return
	}
	w.WriteHeader(code)
}

func (h *hookServer) got() []hookCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls)
}

func TestEgressWebhookRawWithCapturedVariables(t *testing.T) {
	hs := newHookServer(t, nil)
	env := egressStart(t, `[{"name":"alerts","subscribe":"alerts/{site}/{kind...}",
		"http_out":{"url":"`+hs.URL+`/hooks/{site}?kind={kind}","method":"PUT",
			"headers":{"Authorization":"Bearer ${TOKEN}","X-Site":"{site}"}}}]`,
		func(k string) (string, bool) { return "s3cret", k == "TOKEN" })
	egressPublish(t, env.b, bridge.Message{Topic: "alerts/north pole/fire/big", Payload: []byte(`{"t":90}`), QoS: 1,
		ContentType: "application/json", UserProperties: map[string]string{"unit": "C"}})
	testwait.For(t, "webhook call", func() bool { return len(hs.got()) == 1 })
	c := hs.got()[0]
	if c.method != "PUT" || c.path != "/hooks/north%20pole" || c.query != "kind=fire%2Fbig" || c.body != `{"t":90}` {
		t.Errorf("call = %+v", c)
	}
	for k, want := range map[string]string{
		"Authorization": "Bearer s3cret", "X-Site": "north pole", "Mqtt-Topic": "alerts/north pole/fire/big",
		"Content-Type": "application/json", "Mqtt-User-Property": "unit=C", "Idempotency-Key": "alerts-1",
	} {
		if got := c.header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
}

func TestEgressWebhookEnvelope(t *testing.T) {
	hs := newHookServer(t, nil)
	env := egressStart(t, `[{"name":"env","subscribe":"s/{id}","http_out":{"url":"`+hs.URL+`/in","body":"envelope"}}]`, nil)
	egressPublish(t, env.b, bridge.Message{Topic: "s/1", Payload: []byte{0xff, 0}, QoS: 1, UserProperties: map[string]string{"k": "v"}})
	testwait.For(t, "webhook call", func() bool { return len(hs.got()) == 1 })
	c := hs.got()[0]
	var e map[string]any
	if err := json.Unmarshal([]byte(c.body), &e); err != nil {
		t.Fatalf("%v: %s", err, c.body)
	}
	if e["topic"] != "s/1" || e["payload"] != "/wA=" || e["payload_encoding"] != "base64" || c.method != "POST" ||
		c.header.Get("Content-Type") != "application/json" || e["timestamp"] == nil {
		t.Errorf("envelope %s, header %v", c.body, c.header)
	}
}

// TestEgressEndpointDownThenBack: no server listens on the URL's port at
// first (connection refused), then one starts; every message arrives, in
// order.
func TestEgressEndpointDownThenBack(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	env := egressStart(t, `[{"name":"o","subscribe":"o/{n}","http_out":{"url":"http://`+addr+`/o/{n}",
		"ordered":true,"retry":{"backoff":"10ms..50ms"},"timeout":"1s"}}]`, nil)
	const n = 30
	for i := range n {
		egressPublish(t, env.b, bridge.Message{Topic: fmt.Sprintf("o/%d", i), Payload: []byte(fmt.Sprint(i)), QoS: 1})
	}
	testwait.For(t, "retries", func() bool { s, _ := env.e.Stats("o"); return s.Retried >= 3 })

	hs := &hookServer{}
	srv := httptest.NewUnstartedServer(hs)
	srv.Listener, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	srv.Start()
	defer srv.Close()
	testwait.For(t, "all delivered", func() bool { return len(hs.got()) == n })
	for i, c := range hs.got() {
		if c.path != fmt.Sprintf("/o/%d", i) || c.body != fmt.Sprint(i) {
			t.Fatalf("call %d = %+v", i, c)
		}
	}
	s, _ := env.e.Stats("o")
	if s.Delivered != n || s.Depth != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestEgressServerErrorsRetried(t *testing.T) {
	hs := newHookServer(t, func(n int) int {
		if n <= 3 {
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	env := egressStart(t, `[{"name":"r","subscribe":"r","http_out":{"url":"`+hs.URL+`/","retry":{"backoff":"5ms..10ms"}}}]`, nil)
	egressPublish(t, env.b, bridge.Message{Topic: "r", Payload: []byte("x"), QoS: 1})
	testwait.For(t, "delivered", func() bool { s, _ := env.e.Stats("r"); return s.Delivered == 1 })
	if calls := hs.got(); len(calls) != 4 || calls[0].header.Get("Idempotency-Key") != calls[3].header.Get("Idempotency-Key") {
		t.Errorf("%d calls", len(calls))
	}
	s, _ := env.e.Stats("r")
	if s.Retried != 3 {
		t.Errorf("stats %+v", s)
	}
}

func TestEgressClientErrorNotRetried(t *testing.T) {
	hs := newHookServer(t, func(int) int { return http.StatusUnprocessableEntity })
	env := egressStart(t, `[{"name":"bad","subscribe":"bad","http_out":{"url":"`+hs.URL+`/","retry":{"backoff":"5ms..10ms"}}}]`, nil)
	egressPublish(t, env.b, bridge.Message{Topic: "bad", Payload: []byte("x"), QoS: 1})
	testwait.For(t, "failed", func() bool { s, _ := env.e.Stats("bad"); return s.Failed == 1 })
	time.Sleep(100 * time.Millisecond)
	if n := len(hs.got()); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
	s, _ := env.e.Stats("bad")
	if s.Retried != 0 || s.Delivered != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestEgressReverseRequestResponse: an MQTT 5 client calls an HTTP API
// through the gateway and gets the answer on its response topic.
func TestEgressReverseRequestResponse(t *testing.T) {
	hs := newHookServer(t, func(n int) int {
		if n == 1 {
			return http.StatusOK
		}
		return http.StatusNotFound
	})
	env := egressStart(t, `[{"name":"api","subscribe":"api/{op}","http_out":{"url":"`+hs.URL+`/{op}"}}]`, nil)
	c := mqtttest.Dial(t, env.mqtt, mqtttest.Options{ClientID: "caller"})
	c.Sub("caller/replies", 1)
	for i, want := range []struct{ status, body string }{{"200", "answer 1 to ping"}, {"404", "answer 2 to ping"}} {
		c.Pub(&paho.Publish{Topic: "api/echo", QoS: 1, Payload: []byte("ping"), Properties: &paho.PublishProperties{
			ResponseTopic: "caller/replies", CorrelationData: []byte{byte(i)},
		}})
		m := c.Next()
		if string(m.Payload) != want.body || m.Properties.User.Get("status") != want.status ||
			string(m.Properties.CorrelationData) != string([]byte{byte(i)}) || m.Properties.ContentType != "text/plain" {
			t.Errorf("reply %d: %q status %q corr %v ct %q", i, m.Payload, m.Properties.User.Get("status"), m.Properties.CorrelationData, m.Properties.ContentType)
		}
	}
}

func TestEgressPollWithETag(t *testing.T) {
	var (
		mu      sync.Mutex
		body    = "v1"
		etag    = `"1"`
		matched atomic.Int64
		polls   atomic.Int64
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		polls.Add(1)
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("If-None-Match") == etag {
			matched.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, body)
	}))
	defer srv.Close()
	env := egressStart(t, `[{"name":"legacy","source":{"http_poll":"`+srv.URL+`/state","interval":"100ms"},"topic":"legacy/state","retain":true}]`, nil)
	c := mqtttest.Dial(t, env.mqtt, mqtttest.Options{ClientID: "watcher"})
	c.Sub("legacy/#", 1)
	m := c.Next()
	if string(m.Payload) != "v1" || m.Properties.ContentType != "text/plain" {
		t.Errorf("got %q %q", m.Payload, m.Properties.ContentType)
	}
	testwait.For(t, "conditional polls", func() bool { return matched.Load() >= 3 })
	c.None(50 * time.Millisecond)
	mu.Lock()
	body, etag = "v2", `"2"`
	mu.Unlock()
	if m := c.Next(); string(m.Payload) != "v2" {
		t.Errorf("got %q", m.Payload)
	}
	c.None(300 * time.Millisecond)
	if s, _ := env.e.SourceStats("legacy"); s.Published != 2 || s.Failures != 0 {
		t.Errorf("stats %+v (polls %d)", s, polls.Load())
	}
	// A retained copy stays readable.
	if ms, _ := env.b.Retained("legacy/state"); len(ms) != 1 || string(ms[0].Payload) != "v2" {
		t.Errorf("retained %v", ms)
	}
}

func TestEgressPollWithoutETagComparesBodies(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 3 {
			w.WriteHeader(http.StatusBadGateway) // one failed poll: the source runs again
			return
		}
		_, _ = io.WriteString(w, "same")
	}))
	defer srv.Close()
	env := egressStart(t, `[{"name":"p","source":{"http_poll":"`+srv.URL+`","interval":"100ms"},"topic":"p/x"}]`, nil)
	testwait.For(t, "polls", func() bool { return n.Load() >= 6 })
	s, _ := env.e.SourceStats("p")
	if s.Published != 1 || s.Failures != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestEgressWebhookBadValue(t *testing.T) {
	tab := egressCompile(t, `[{"name":"h","subscribe":"h/{host}","http_out":{"url":"http://{host}.lan/x"}}]`, nil)
	r, _ := tab.Route("h")
	d, err := EgressWebhook(r, EgressOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Deliver(context.Background(), &egress.Delivery{Vars: mapping.VarsOf("host", "a b")})
	if !egress.IsPermanent(err) || !strings.Contains(err.Error(), "host name") {
		t.Errorf("err = %v", err)
	}
}
