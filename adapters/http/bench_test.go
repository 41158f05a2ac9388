package httpadapter

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/edgebridge/gateway/bridge"
)

// benchWriter is a minimal http.ResponseWriter that keeps nothing.
type benchWriter struct {
	h      http.Header
	status int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *benchWriter) WriteHeader(code int)        { w.status = code }

// benchBody is a request body that can be rewound without allocating.
type benchBody struct {
	p   []byte
	off int
}

func (b *benchBody) Read(p []byte) (int, error) {
	if b.off >= len(b.p) {
		return 0, io.EOF
	}
	n := copy(p, b.p[b.off:])
	b.off += n
	return n, nil
}
func (b *benchBody) Close() error { return nil }

// BenchmarkPublishHandler measures the adapter's publish path through the
// whole handler (router, topic decoding, body read, metrics, bridge
// publish) with one broker-side subscriber, without the network. The
// "naive" variants are a bare chi handler that only reads the body and calls
// bridge.Publish: the adapter's own overhead is the difference.
func BenchmarkPublishHandler(b *testing.B) {
	for _, tc := range []struct {
		name, query string
		naive       bool
	}{{"qos0", "qos=0", false}, {"qos1", "qos=1", false}, {"naive-qos0", "qos=0", true}, {"naive-qos1", "qos=1", true}} {
		b.Run(tc.name, func(b *testing.B) {
			br, err := bridge.New(bridge.Config{})
			if err != nil {
				b.Fatal(err)
			}
			if err := br.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer func() { _ = br.Shutdown(context.Background()) }()
			sub, err := br.Subscribe("bench/#", bridge.SubOptions{QoS: 1}, func(bridge.Message) {})
			if err != nil {
				b.Fatal(err)
			}
			defer sub.Close()
			var h http.Handler
			if tc.naive {
				mux := chi.NewMux()
				mux.Post("/topics/*", func(w http.ResponseWriter, r *http.Request) {
					body, _ := io.ReadAll(r.Body)
					qos := byte(0)
					if r.URL.RawQuery == "qos=1" {
						qos = 1
					}
					if err := br.Publish(r.Context(), bridge.Message{Topic: r.URL.Path[len("/topics/"):], Payload: body, QoS: qos}); err != nil {
						w.WriteHeader(http.StatusServiceUnavailable)
						return
					}
					w.WriteHeader(http.StatusNoContent)
				})
				h = mux
			} else {
				s, err := New(Config{Generic: true}, br)
				if err != nil {
					b.Fatal(err)
				}
				h = s.Handler()
			}
			body := &benchBody{p: []byte(`{"t":21.5,"unit":"C"}`)}
			req := &http.Request{
				Method:        http.MethodPost,
				URL:           &url.URL{Path: "/topics/bench/sensor/17", RawQuery: tc.query},
				Header:        http.Header{"Content-Type": {"application/json"}},
				Body:          body,
				ContentLength: int64(len(body.p)),
				Proto:         "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			}
			req = req.WithContext(context.Background())
			w := &benchWriter{h: http.Header{}}
			b.ReportAllocs()
			b.SetBytes(int64(len(body.p)))
			for b.Loop() {
				body.off = 0
				w.status = 0
				h.ServeHTTP(w, req)
				if w.status != http.StatusNoContent {
					b.Fatalf("status %d", w.status)
				}
			}
		})
	}
}

// BenchmarkEnvelope measures encoding one SSE envelope.
func BenchmarkEnvelope(b *testing.B) {
	m := bridge.Message{Topic: "sensors/17/t", Payload: []byte("21.5"), QoS: 1, ContentType: "text/plain",
		UserProperties: map[string]string{"unit": "C"}}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendEnvelope(buf[:0], &m)
	}
}
