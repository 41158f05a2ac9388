package httpadapter

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/internal/brokertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is one running broker (with an MQTT listener) and adapter.
type env struct {
	b    *bridge.Broker
	s    *Server
	mqtt string // MQTT host:port
	url  string // http://host:port
	c    *http.Client
}

// startBroker runs a broker with one MQTT TCP listener on a free port.
func startBroker(t testing.TB, cfg bridge.Config) *bridge.Broker {
	t.Helper()
	cfg.Listeners = nil
	b, _ := brokertest.Start(t, cfg)
	return b
}

// startServer runs the adapter on 127.0.0.1:0 for b.
func startServer(t *testing.T, b *bridge.Broker, cfg Config) *Server {
	t.Helper()
	cfg.Address = "127.0.0.1:0"
	cfg.Generic = true
	s, err := New(cfg, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return s
}

// start runs a fresh broker and adapter.
func start(t *testing.T, cfg Config) *env {
	t.Helper()
	b := startBroker(t, bridge.Config{})
	s := startServer(t, b, cfg)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &env{b: b, s: s, mqtt: b.Addrs()[0].Address, url: "http://" + s.Addr(), c: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// do sends a request and returns the response with its body read.
func (e *env) do(t *testing.T, method, path string, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := e.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// wantStatus fails unless resp has status code want.
func wantStatus(t *testing.T, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL, resp.StatusCode, want, body)
	}
}

// wantProblem fails unless resp is a problem+json with status want and a
// title containing titlePart; it returns the problem.
func wantProblem(t *testing.T, resp *http.Response, body []byte, want int, titlePart string) problem {
	t.Helper()
	wantStatus(t, resp, body, want)
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("%s %s: Content-Type %q, want application/problem+json", resp.Request.Method, resp.Request.URL, ct)
	}
	var p problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("problem body %s: %v", body, err)
	}
	if p.Status != want || p.Type == "" || p.Title == "" || !strings.Contains(p.Title, titlePart) {
		t.Fatalf("%s %s: problem %+v, want status %d and title containing %q", resp.Request.Method, resp.Request.URL, p, want, titlePart)
	}
	if (want == 503 || want == 429) && resp.Header.Get("Retry-After") == "" {
		t.Fatalf("%d without Retry-After", want)
	}
	return p
}

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct {
	id, event, data string
	comment         string
}

// sseReader reads events from a streaming response body.
type sseReader struct {
	t    *testing.T
	resp *http.Response
	br   *bufio.Reader
	ch   chan sseEvent
	done chan struct{}
}

// openSSE opens a stream on path and starts reading it; the stream closes
// when the test ends (or with close).
func (e *env) openSSE(t *testing.T, ctx context.Context, path string, hdr ...string) *sseReader {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{Transport: e.c.Transport} // no overall timeout for streams
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		t.Fatalf("stream %s: %d %s %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	r := &sseReader{t: t, resp: resp, br: bufio.NewReader(resp.Body), ch: make(chan sseEvent, 10000), done: make(chan struct{})}
	go r.loop()
	t.Cleanup(r.close)
	return r
}

func (r *sseReader) loop() {
	defer close(r.done)
	defer close(r.ch)
	var ev sseEvent
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev != (sseEvent{}) {
				r.ch <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
			ev.comment = strings.TrimSpace(line[1:])
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			ev.data = line[6:]
		}
	}
}

func (r *sseReader) close() {
	_ = r.resp.Body.Close()
	<-r.done
}

// next returns the next event that is not a comment.
func (r *sseReader) next() sseEvent {
	r.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-r.ch:
			if !ok {
				r.t.Fatal("stream ended")
			}
			if ev.comment != "" && ev.data == "" {
				continue
			}
			return ev
		case <-timeout:
			r.t.Fatal("no event within 5s")
		}
	}
}

// envelopeOf decodes an event's data.
func envelopeOf(t *testing.T, ev sseEvent) envelope {
	t.Helper()
	var e envelope
	if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
		t.Fatalf("event data %q: %v", ev.data, err)
	}
	return e
}

// msg is a QoS 0 message with a string payload.
func msg(topic, payload string) bridge.Message {
	return bridge.Message{Topic: topic, Payload: []byte(payload)}
}

func bridgeConfig() bridge.Config { return bridge.Config{} }

// newClient is an HTTP client whose idle connections close with the test.
func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// metricValue reads a counter or gauge.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
