package httpadapter

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgebridge/gateway/internal/mqtttest"
	"github.com/edgebridge/gateway/internal/testwait"
)

func TestSSERetainedFirstThenLiveWithWildcards(t *testing.T) {
	e := start(t, Config{SSEHeartbeat: 50 * time.Millisecond})
	pub := mqtttest.Dial(t, e.mqtt, mqtttest.Options{ClientID: "pub"})
	// Retained via HTTP: an MQTT client's PUBACK comes before mochi's
	// fan-out, so a stream opened right after it may see the message twice.
	resp, body := e.do(t, "PUT", "/topics/home/kitchen/t", "20")
	wantStatus(t, resp, body, 204)

	st := e.openSSE(t, context.Background(), "/topics/home/+/t")
	ev := st.next()
	env := envelopeOf(t, ev)
	if ev.id != "1" || env.Topic != "home/kitchen/t" || env.Payload != "20" || !env.Retain {
		t.Fatalf("retained first: %+v", ev)
	}
	pub.Pub(&paho.Publish{Topic: "home/hall/t", QoS: 2, Payload: []byte{0xff, 0xfe},
		Properties: &paho.PublishProperties{ContentType: "application/octet-stream",
			User: paho.UserProperties{{Key: "k", Value: "v"}}}})
	pub.Pub(&paho.Publish{Topic: "home/hall/h", QoS: 0, Payload: []byte("not matching")})
	resp, body = e.do(t, "POST", "/topics/home/garage/t?qos=0", "18", "Content-Type", "text/plain")
	wantStatus(t, resp, body, 204)

	ev = st.next()
	env = envelopeOf(t, ev)
	if ev.id != "2" || env.Topic != "home/hall/t" || env.PayloadEncoding != "base64" || env.Payload != "//4=" ||
		env.Retain || *env.QoS != 2 || env.ContentType != "application/octet-stream" || env.UserProperties["k"] != "v" {
		t.Fatalf("live: %+v", ev)
	}
	ev = st.next()
	env = envelopeOf(t, ev)
	if ev.id != "3" || env.Topic != "home/garage/t" || env.Payload != "18" || env.PayloadEncoding != "utf8" || *env.QoS != 0 {
		t.Fatalf("live from HTTP: %+v", ev)
	}
	// Heartbeats arrive on an idle stream.
	deadline := time.After(2 * time.Second)
	for {
		select {
		case ev := <-st.ch:
			if ev.comment == "heartbeat" {
				return
			}
		case <-deadline:
			t.Fatal("no heartbeat")
		}
	}
}

func TestSSELastEventIDContinuesIDs(t *testing.T) {
	e := start(t, Config{})
	resp, body := e.do(t, "PUT", "/topics/s/x", "1")
	wantStatus(t, resp, body, 204)
	st := e.openSSE(t, context.Background(), "/topics/s/%23", "Last-Event-ID", "41")
	if ev := st.next(); ev.id != "42" || envelopeOf(t, ev).Topic != "s/x" {
		t.Fatalf("first event after Last-Event-ID 41: %+v", ev)
	}
	resp, body = e.do(t, "POST", "/topics/s/y", "2")
	wantStatus(t, resp, body, 204)
	if ev := st.next(); ev.id != "43" {
		t.Fatalf("second: %+v", ev)
	}
	st2 := e.openSSE(t, context.Background(), "/topics/s/%23", "Last-Event-ID", "garbage")
	if ev := st2.next(); ev.id != "1" {
		t.Fatalf("bad Last-Event-ID: %+v", ev)
	}
}

// TestSSESlowReaderDropsAndNeverStallsBroker: a client that does not read
// fills its queue; further messages are dropped and counted, publishers
// and other streams are not slowed, and the client learns of the gap.
func TestSSESlowReaderDropsAndNeverStallsBroker(t *testing.T) {
	e := start(t, Config{SSEQueue: 8})
	// The slow reader: a raw connection that reads nothing for a while.
	conn, err := net.Dial("tcp", e.s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	fmt.Fprintf(conn, "GET /topics/load/%%23 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
	br := bufio.NewReaderSize(conn, 1024)
	if line, _ := br.ReadString('\n'); !strings.Contains(line, "200") {
		t.Fatalf("status line %q", line)
	}
	fast := e.openSSE(t, context.Background(), "/topics/load/%23")
	testwait.For(t, "two streams", func() bool { return e.s.sseOpen.Load() == 2 })

	const n = 3000
	payload := strings.Repeat("x", 4096) // 12 MB in all: far beyond socket buffers
	start := time.Now()
	for i := range n {
		if err := e.b.Publish(context.Background(), msg("load/a", payload+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("publishing %d messages took %v: the slow reader stalled the broker", n, d)
	}
	// The fast stream gets them all, or learns exactly how many it lost.
	got, lost := 0, 0
	for got+lost < n {
		ev := fast.next()
		if ev.event == "dropped" {
			var d, tot int
			if _, err := fmt.Sscanf(ev.data, `{"dropped":%d,"total":%d}`, &d, &tot); err != nil {
				t.Fatalf("dropped event %q: %v", ev.data, err)
			}
			lost += d
			continue
		}
		got++
	}
	if dropped := metricValue(e.s.metrics.sseDropped); dropped == 0 {
		t.Fatal("nothing dropped with a reader that does not read")
	}
	// Now the slow reader reads: it sees a dropped event telling how many.
	sawDropped := false
	deadline := time.Now().Add(5 * time.Second)
	_ = conn.SetReadDeadline(deadline)
	for !sawDropped && time.Now().Before(deadline) {
		line, err := br.ReadString('\n')
		if err != nil {
			break
		}
		if strings.HasPrefix(line, "event: dropped") {
			sawDropped = true
		}
	}
	if !sawDropped {
		t.Fatal("slow reader never got an 'event: dropped'")
	}
}

func TestSSEDisconnectUnsubscribes(t *testing.T) {
	e := start(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	st := e.openSSE(t, ctx, "/topics/gone/%23")
	testwait.For(t, "stream open", func() bool { return e.s.sseOpen.Load() == 1 })
	if v := metricValue(e.s.metrics.sseStreams); v != 1 {
		t.Fatalf("open streams gauge %v", v)
	}
	cancel()
	st.close()
	testwait.For(t, "stream closed", func() bool { return e.s.sseOpen.Load() == 0 })
	testwait.For(t, "gauge back to 0", func() bool { return metricValue(e.s.metrics.sseStreams) == 0 })
	// The subscription is gone: publishing does not reach (and so cannot
	// drop into) the dead stream's queue.
	before := metricValue(e.s.metrics.sseDropped)
	for range 1000 {
		if err := e.b.Publish(context.Background(), msg("gone/x", "x")); err != nil {
			t.Fatal(err)
		}
	}
	if after := metricValue(e.s.metrics.sseDropped); after != before {
		t.Fatalf("a closed stream still receives messages (%v dropped)", after-before)
	}
	// goleak in TestMain checks that the stream's goroutines ended.
}

func TestShutdownEndsStreams(t *testing.T) {
	b := startBroker(t, bridgeConfig())
	s, err := New(Config{Address: "127.0.0.1:0", Generic: true}, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e := &env{b: b, s: s, url: "http://" + s.Addr(), c: newClient(t)}
	st := e.openSSE(t, context.Background(), "/topics/x")
	testwait.For(t, "stream open", func() bool { return s.sseOpen.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("shutdown waited for the stream")
	}
	select {
	case <-st.done:
	case <-time.After(2 * time.Second):
		t.Fatal("stream still open after Shutdown")
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := s.Start(ctx); err == nil {
		t.Fatal("Start after Shutdown succeeded")
	}
}

func TestSSEEndsWhenBrokerStops(t *testing.T) {
	e := start(t, Config{SSEHeartbeat: 20 * time.Millisecond})
	st := e.openSSE(t, context.Background(), "/topics/x")
	testwait.For(t, "stream open", func() bool { return e.s.sseOpen.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-st.done:
	case <-time.After(3 * time.Second):
		t.Fatal("stream still open after the broker stopped")
	}
}
