package httpadapter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestErrorsAreProblems(t *testing.T) {
	e := start(t, Config{MaxPayload: 1024, MaxSSEStreams: 1, Ready: func() error { return errors.New("storage is still loading") }})
	for _, tc := range []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
		title                    string
	}{
		{"wildcard publish", "POST", "/topics/sensors/+/t", "x", nil, 400, "publish topic must not contain wildcards: sensors/+/t"},
		{"hash publish", "POST", "/topics/sensors/%23", "x", nil, 400, "publish topic must not contain wildcards: sensors/#"},
		{"empty topic", "POST", "/topics/", "x", nil, 400, "topic must not be empty"},
		{"dollar topic", "PUT", "/topics/$SYS/x", "x", nil, 400, "reserved for the broker"},
		{"nul", "POST", "/topics/a%00b", "x", nil, 400, "U+0000"},
		{"bad utf8", "POST", "/topics/a%FF", "x", nil, 400, "not valid UTF-8"},
		{"bad filter", "GET", "/topics/a/%23/b", "", []string{"Accept", "text/event-stream"}, 400, "'#' must be the last level"},
		{"bad qos", "POST", "/topics/a?qos=3", "x", nil, 400, `qos must be 0, 1 or 2, not "3"`},
		{"bad retain", "POST", "/topics/a?retain=maybe", "x", nil, 400, `retain must be true or false`},
		{"bad envelope param", "GET", "/topics/a?envelope=yes", "", nil, 400, "envelope must be true or false"},
		{"bad user property", "POST", "/topics/a", "x", []string{"MQTT-User-Property", "novalue"}, 400, "MQTT-User-Property must be name=value"},
		{"bad expiry", "POST", "/topics/a", "x", []string{"MQTT-Message-Expiry", "soon"}, 400, "MQTT-Message-Expiry must be a number of seconds"},
		{"zero expiry", "POST", "/topics/a", "x", []string{"MQTT-Message-Expiry", "0"}, 400, "between 1 and 4294967295"},
		{"bad batch json", "POST", "/publish", "[{", []string{"Content-Type", "application/json"}, 400, "JSON array of envelopes"},
		{"no route", "GET", "/nothing", "", nil, 404, "no route for /nothing"},
		{"no retained", "GET", "/topics/none", "", nil, 404, "no retained message on topic none"},
		{"method topics", "PATCH", "/topics/a", "x", nil, 405, "method PATCH is not allowed"},
		{"method publish", "GET", "/publish", "", nil, 405, "method GET is not allowed"},
		{"too large declared", "POST", "/topics/a", strings.Repeat("x", 1025), nil, 413, "larger than the limit of 1024 bytes"},
		{"batch media type", "POST", "/publish", "[]", []string{"Content-Type", "text/plain"}, 415, "Content-Type application/json"},
		{"batch no media type", "POST", "/publish", "[]", nil, 415, "Content-Type application/json"},
		{"not ready", "GET", "/readyz", "", nil, 503, "not ready: storage is still loading"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.do(t, tc.method, tc.path, tc.body, tc.hdr...)
			wantProblem(t, resp, body, tc.status, tc.title)
		})
	}
	// 405 lists what is allowed.
	resp, body := e.do(t, "PATCH", "/topics/a", "x")
	if got := resp.Header.Values("Allow"); strings.Join(got, ",") != "GET,HEAD,POST,PUT,DELETE" {
		t.Fatalf("Allow %v (%s)", got, body)
	}
	resp, _ = e.do(t, "GET", "/publish", "")
	if got := resp.Header.Values("Allow"); strings.Join(got, ",") != "POST" {
		t.Fatalf("Allow %v", got)
	}

	// 503: stream limit.
	e.openSSE(t, context.Background(), "/topics/x")
	resp, body = e.do(t, "GET", "/topics/y", "", "Accept", "text/event-stream")
	wantProblem(t, resp, body, 503, "too many open event streams")

	// /metrics counts errors by status.
	resp, body = e.do(t, "GET", "/metrics", "")
	wantStatus(t, resp, body, 200)
	for _, want := range []string{`gateway_http_errors_total{status="400"}`, `gateway_http_errors_total{status="413"}`,
		"gateway_http_sse_streams 1", "gateway_broker_clients", "gateway_publish_duration_seconds_bucket", "gateway_http_sse_dropped_total"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestTooLargeIsAnsweredWithoutReadingTheBody: a declared Content-Length
// over the limit is refused before the body is sent; a chunked body is cut
// off at the limit.
func TestTooLargeIsAnsweredWithoutReadingTheBody(t *testing.T) {
	e := start(t, Config{MaxPayload: 1024})
	conn, err := net.Dial("tcp", e.s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	// Declare 1 GB, send a few bytes and wait: the answer must come anyway.
	fmt.Fprintf(conn, "POST /topics/big HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\nabc")
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufioReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to an oversized declared body: %v", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Request = &http.Request{Method: "POST", URL: mustURL("/topics/big")}
	wantProblem(t, resp, body, 413, "larger than the limit of 1024 bytes")

	// Chunked (no Content-Length): cut off at the limit.
	pr, pw := io.Pipe()
	go func() {
		defer func() { _ = pw.Close() }()
		chunk := []byte(strings.Repeat("y", 512))
		for range 100 {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
	}()
	req, _ := http.NewRequest("POST", e.url+"/topics/big", pr)
	req.ContentLength = -1
	resp, err = e.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	pr.CloseWithError(io.ErrClosedPipe)
	wantProblem(t, resp, body, 413, "larger than the limit of 1024 bytes")
}

func TestRateLimit(t *testing.T) {
	e := start(t, Config{RatePerClient: 3})
	var last *http.Response
	var body []byte
	for range 10 {
		last, body = e.do(t, "POST", "/topics/r", "x")
		if last.StatusCode == 429 {
			break
		}
	}
	wantProblem(t, last, body, 429, "rate limit of 3 requests per second")
	// Health endpoints are not limited.
	resp, b := e.do(t, "GET", "/healthz", "")
	wantStatus(t, resp, b, 200)
}

func TestBrokerStoppedIs503(t *testing.T) {
	e := start(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ method, path string }{
		{"POST", "/topics/a"}, {"GET", "/topics/a"}, {"GET", "/readyz"},
	} {
		resp, body := e.do(t, tc.method, tc.path, "x")
		wantProblem(t, resp, body, 503, "broker is not running")
	}
	resp, body := e.do(t, "GET", "/topics/a", "", "Accept", "text/event-stream")
	wantProblem(t, resp, body, 503, "broker is not running")
	resp, body = e.do(t, "POST", "/publish", "[]", "Content-Type", "application/json")
	wantProblem(t, resp, body, 503, "broker is not running")
	resp, body = e.do(t, "GET", "/healthz", "")
	wantStatus(t, resp, body, 200)
}

// TestSlowHeadersAreCutOff: a client that never finishes its headers is
// disconnected after ReadHeaderTimeout.
func TestSlowHeadersAreCutOff(t *testing.T) {
	old := readHeaderTimeout
	readHeaderTimeout = 200 * time.Millisecond
	defer func() { readHeaderTimeout = old }()
	e := start(t, Config{})
	conn, err := net.Dial("tcp", e.s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	start := time.Now()
	_, err = io.ReadAll(conn)
	if err != nil || time.Since(start) > 2*time.Second {
		t.Fatalf("connection not closed after the header timeout: %v after %v", err, time.Since(start))
	}
}
