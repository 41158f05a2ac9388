package coapadapter

import (
	"bytes"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgebridge/gateway/internal/testwait"
)

// RFC 7252 §4.5: a retransmitted CON gets the same response, byte for
// byte, and the handler runs once (one MQTT message).
func TestDuplicateCONAnsweredFromCacheHandlerRunsOnce(t *testing.T) {
	e := start(t, Config{})
	sub := e.subscriber(t, "dup/#")
	c := dialRaw(t, e.udp)
	req := c.request(message.Confirmable, codes.POST, "tk1", -1, "ps", "dup", "x")
	req.Payload = []byte("once")
	d := encode(t, req)
	c.send(d)
	first, m1, ok := c.recv(2 * time.Second)
	if !ok || m1.Code != codes.Changed || m1.Type != message.Acknowledgement || m1.MessageID != req.MessageID {
		t.Fatalf("first answer %+v", m1)
	}
	c.send(d)
	second, _, ok := c.recv(2 * time.Second)
	if !ok || !bytes.Equal(first, second) {
		t.Fatalf("retransmission answered %x, first was %x", second, first)
	}
	if m := sub.Next(); string(m.Payload) != "once" {
		t.Fatalf("payload %q", m.Payload)
	}
	sub.None(200 * time.Millisecond)

	// The same message ID with a new token is a new request (a rebooted
	// device), not a retransmission.
	req.Token = []byte("tk2")
	req.Payload = []byte("again")
	c.send(encode(t, req))
	if _, m, ok := c.recv(2 * time.Second); !ok || m.Code != codes.Changed || string(m.Token) != "tk2" {
		t.Fatalf("reused MID answered %+v", m)
	}
	if m := sub.Next(); string(m.Payload) != "again" {
		t.Fatalf("payload %q", m.Payload)
	}
}

// observeRaw registers an observation from a raw socket and returns the
// registration response.
func observeRaw(t *testing.T, c *rawClient, token string, path ...string) message.Message {
	t.Helper()
	c.send(encode(t, c.request(message.Confirmable, codes.GET, token, 0, path...)))
	_, m, ok := c.recv(2 * time.Second)
	if !ok || m.Code != codes.Content {
		t.Fatalf("registration answered %+v", m)
	}
	return m
}

// RFC 7641 §3.6: an RST to a notification ends the observation.
func TestRSTEndsObservation(t *testing.T) {
	e := start(t, Config{})
	c := dialRaw(t, e.udp)
	observeRaw(t, c, "rst", "ps", "r")
	pub := mqtttestDial(t, e)
	pub.Pub(&paho.Publish{Topic: "r", QoS: 1, Payload: []byte("n0")})
	_, n, ok := c.recv(2 * time.Second)
	if !ok || n.Type != message.Confirmable || string(n.Payload) != "n0" {
		t.Fatalf("notification %+v", n)
	}
	c.ack(n) // acknowledged: the observation goes on
	pub.Pub(&paho.Publish{Topic: "r", QoS: 1, Payload: []byte("n1")})
	_, n, ok = c.recv(2 * time.Second)
	if !ok || n.Type != message.Confirmable || string(n.Payload) != "n1" {
		t.Fatalf("notification %+v", n)
	}
	c.rst(n)
	testwait.For(t, "observation ended by RST", func() bool { return observerCount(e.s) == 0 })
	pub.Pub(&paho.Publish{Topic: "r", QoS: 0, Payload: []byte("n2")})
	if _, m, ok := c.recv(200 * time.Millisecond); ok {
		t.Fatalf("notification after RST: %+v", m)
	}

	// An RST to a NON notification ends it as well.
	observeRaw(t, c, "rst2", "ps", "r")
	pub.Pub(&paho.Publish{Topic: "r", QoS: 0, Payload: []byte("n3")})
	_, n, ok = c.recv(2 * time.Second)
	if !ok || n.Type != message.NonConfirmable {
		t.Fatalf("NON notification %+v", n)
	}
	c.rst(n)
	testwait.For(t, "observation ended by RST to NON", func() bool { return observerCount(e.s) == 0 })
}

// RFC 7641 §4.5: a CON notification never acknowledged, after all
// retransmissions, ends the observation.
func TestUnacknowledgedNotificationEndsObservation(t *testing.T) {
	e := start(t, Config{AckTimeout: 40 * time.Millisecond, MaxRetransmit: 2})
	c := dialRaw(t, e.udp)
	observeRaw(t, c, "silent", "ps", "s")
	pub := mqtttestDial(t, e)
	pub.Pub(&paho.Publish{Topic: "s", QoS: 1, Payload: []byte("hello?")})
	var mids []int32
	for {
		_, n, ok := c.recv(time.Second)
		if !ok {
			break
		}
		mids = append(mids, n.MessageID)
	}
	if len(mids) != 3 || mids[0] != mids[1] || mids[1] != mids[2] {
		t.Fatalf("want the notification and 2 retransmissions with one message ID, got %v", mids)
	}
	testwait.For(t, "observation ended", func() bool { return observerCount(e.s) == 0 })
	if v := value(e.s.metrics.ended.WithLabelValues("not acknowledged")); v != 1 {
		t.Fatalf("ended{not acknowledged} = %v", v)
	}
}

// A slow observer's queue overflows: the oldest are dropped and counted, the
// broker and another observer are not held up.
func TestObserverQueueOverflowDropsAndCounts(t *testing.T) {
	e := start(t, Config{ObserverQueue: 2})
	slow := dialRaw(t, e.udp)
	observeRaw(t, slow, "slow", "ps", "q")
	fast := dialUDP(t, e.udp)
	n := newNotifications()
	obs, err := fast.Observe(ctx5(t), "/ps/q", n.add)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = obs.Cancel(ctx5(t)) }()
	n.next(t, 0)
	pub := mqtttestDial(t, e)
	start := time.Now()
	for i := range 10 {
		pub.Pub(&paho.Publish{Topic: "q", QoS: 1, Payload: []byte{byte('0' + i)}})
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("publishing took %v: a slow observer held up the broker", d)
	}
	// The fast observer gets the latest state (its queue of 2 may drop
	// some in between too).
	testwait.For(t, "fast observer sees the last message", func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return len(n.ms) > 1 && body(t, n.ms[len(n.ms)-1]) == "9"
	})
	// The slow one never acknowledges: one in flight, two queued, the rest
	// dropped.
	if v := value(e.s.metrics.dropped); v < 7 {
		t.Fatalf("dropped %v, want at least 7", v)
	}
}

// A datagram that is not CoAP creates no state; a malformed CON is reset.
func TestGarbageDatagrams(t *testing.T) {
	e := start(t, Config{})
	c := dialRaw(t, e.udp)
	c.send([]byte{0xff, 0xff})
	c.send([]byte{0x00, 1, 2, 3, 4}) // version 0
	if _, m, ok := c.recv(100 * time.Millisecond); ok {
		t.Fatalf("answer to garbage: %+v", m)
	}
	c.send([]byte{0x48, 0x01, 0x12, 0x34, 1}) // CON GET, TKL 8 but 1 byte of token
	_, m, ok := c.recv(time.Second)
	if !ok || m.Type != message.Reset || m.MessageID != 0x1234 {
		t.Fatalf("malformed CON answered %+v", m)
	}
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// RFC 7252 §5.2.3: a NON request gets a NON response (go-coap would send CON
// and retransmit it until acknowledged).
func TestNONRequestGetsNONResponse(t *testing.T) {
	e := start(t, Config{})
	c := dialRaw(t, e.udp)
	req := c.request(message.NonConfirmable, codes.POST, "non", -1, "ps", "n")
	req.Payload = []byte("x")
	c.send(encode(t, req))
	_, m, ok := c.recv(time.Second)
	if !ok || m.Type != message.NonConfirmable || m.Code != codes.Changed || string(m.Token) != "non" {
		t.Fatalf("answer %+v", m)
	}
	if _, m, ok := c.recv(3 * time.Second); ok {
		t.Fatalf("retransmitted: %+v", m)
	}
}

// RFC 7641 §4.5: an observer of QoS 0 messages still gets a CON
// notification at least every 24 hours (here: every 100 ms).
func TestNONObserverGetsPeriodicCON(t *testing.T) {
	e := start(t, Config{conKeepalive: 100 * time.Millisecond})
	c := dialRaw(t, e.udp)
	observeRaw(t, c, "keep", "ps", "k")
	pub := mqtttestDial(t, e)
	pub.Pub(&paho.Publish{Topic: "k", QoS: 0, Payload: []byte("a")})
	if _, n, ok := c.recv(time.Second); !ok || n.Type != message.NonConfirmable {
		t.Fatalf("first QoS 0 notification %+v", n)
	}
	time.Sleep(150 * time.Millisecond)
	pub.Pub(&paho.Publish{Topic: "k", QoS: 0, Payload: []byte("b")})
	_, n, ok := c.recv(time.Second)
	if !ok || n.Type != message.Confirmable {
		t.Fatalf("keepalive notification %+v, want CON", n)
	}
	c.ack(n)
}
