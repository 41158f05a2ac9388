package httpadapter

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
)

func TestPanicIs500Problem(t *testing.T) {
	e := start(t, Config{Mount: func(r chi.Router) {
		r.Get("/boom", func(http.ResponseWriter, *http.Request) { panic("boom") })
	}})
	resp, body := e.do(t, "GET", "/boom", "")
	wantProblem(t, resp, body, 500, "internal error")
}

func TestShutdownDrainsInFlightRequests(t *testing.T) {
	b := startBroker(t, bridgeConfig())
	started := make(chan struct{})
	s, err := New(Config{Address: "127.0.0.1:0", Mount: func(r chi.Router) {
		r.Get("/slow", func(w http.ResponseWriter, _ *http.Request) {
			close(started)
			time.Sleep(300 * time.Millisecond)
			_, _ = w.Write([]byte("done"))
		})
	}}, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := newClient(t)
	type res struct {
		body string
		err  error
	}
	got := make(chan res, 1)
	go func() {
		resp, err := c.Get("http://" + s.Addr() + "/slow")
		if err != nil {
			got <- res{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		got <- res{string(b), err}
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil || r.body != "done" {
		t.Fatalf("in-flight request: %q %v", r.body, r.err)
	}
	if _, err := c.Get("http://" + s.Addr() + "/healthz"); err == nil {
		t.Fatal("a request after Shutdown was served")
	}
}

// FuzzPublishRequest throws arbitrary paths, queries, headers and bodies at
// the handler: it must never panic and must answer 204 or a problem with a
// documented status. `go test` runs the seeds; `go test -fuzz` explores.
func FuzzPublishRequest(f *testing.F) {
	for _, s := range [][4]string{
		{"/topics/a/b", "qos=1", "k=v", "x"},
		{"/topics/a%2Fb", "retain=true", "", ""},
		{"/topics//", "qos=%", "=", "\xff"},
		{"/topics/%23", "qos=3&retain=x", "k", "payload"},
		{"/topics/$SYS/x", "", "a=b=c", strings.Repeat("y", 300)},
		{"/topics/a%00", "qos=0&qos=2", "\x00=1", "{}"},
		{"/publish", "", "", `[{"topic":"a","payload":"x"}]`},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	b := startBroker(f, bridgeConfig())
	s, err := New(Config{Generic: true, MaxPayload: 256}, b)
	if err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	allowed := map[int]bool{200: true, 204: true, 400: true, 404: true, 405: true, 413: true, 415: true, 503: true}
	f.Fuzz(func(t *testing.T, path, query, userProp, body string) {
		u := &url.URL{Path: path, RawQuery: query}
		req, err := http.NewRequest(http.MethodPost, "http://x"+u.String(), strings.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		req.Header.Set("Content-Type", "application/json")
		if userProp != "" && !strings.ContainsAny(userProp, "\r\n") {
			req.Header.Set("MQTT-User-Property", userProp)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if !allowed[w.Code] {
			t.Fatalf("%s?%s: status %d %s", path, query, w.Code, w.Body)
		}
		if w.Code >= 400 && w.Header().Get("Content-Type") != "application/problem+json" {
			t.Fatalf("%s?%s: %d without problem+json", path, query, w.Code)
		}
	})
}
