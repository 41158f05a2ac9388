package coapadapter

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/mux"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/edgebridge/gateway/internal/coaptest"
	"github.com/edgebridge/gateway/internal/testwait"
)

// dialUDP connects a go-coap UDP client; it closes when the test ends.
func dialUDP(t *testing.T, addr string, opts ...udp.Option) *udpClient.Conn {
	t.Helper()
	return coaptest.DialUDP(t, addr, opts...)
}

// coapConn is what the transport-independent tests need of a client.
type coapConn interface {
	mux.Conn
}

func TestPublishCONIsQoS1AndNONIsQoS0(t *testing.T) {
	e := start(t, Config{})
	sub := e.subscriber(t, "sensors/#")
	cc := dialUDP(t, e.udp)

	resp, err := cc.Post(ctx5(t), "/ps/sensors/1/t", message.AppJSON, bytes.NewReader([]byte(`{"t":21.5}`)))
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, resp, codes.Changed)
	m := sub.Next()
	if m.Topic != "sensors/1/t" || string(m.Payload) != `{"t":21.5}` || m.QoS != 1 || m.Properties.ContentType != "application/json" {
		t.Fatalf("CON: got %s %q qos %d ct %q", m.Topic, m.Payload, m.QoS, m.Properties.ContentType)
	}

	req, err := cc.NewPostRequest(ctx5(t), "/ps/sensors/2/t", message.TextPlain, bytes.NewReader([]byte("19")))
	if err != nil {
		t.Fatal(err)
	}
	req.SetType(message.NonConfirmable)
	resp, err = cc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, resp, codes.Changed)
	m = sub.Next()
	if m.Topic != "sensors/2/t" || m.QoS != 0 || m.Properties.ContentType != "text/plain" {
		t.Fatalf("NON: got %s qos %d ct %q", m.Topic, m.QoS, m.Properties.ContentType)
	}

	// qos= overrides the message type.
	resp, err = cc.Post(ctx5(t), "/ps/sensors/3/t", message.AppOctets, bytes.NewReader([]byte{1}), message.Option{ID: message.URIQuery, Value: []byte("qos=2")})
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, resp, codes.Changed)
	if m = sub.Next(); m.QoS != 2 || m.Properties.ContentType != "application/octet-stream" {
		t.Fatalf("qos=2: got qos %d ct %q", m.QoS, m.Properties.ContentType)
	}
}

func TestPutGetDelete(t *testing.T) {
	e := start(t, Config{})
	cc := dialUDP(t, e.udp)
	resp, err := cc.Put(ctx5(t), "/ps/state/lamp", message.AppCBOR, bytes.NewReader([]byte{0xf5}))
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, resp, codes.Changed)

	resp, err = cc.Get(ctx5(t), "/ps/state/lamp")
	if err != nil {
		t.Fatal(err)
	}
	if got := expectCode(t, resp, codes.Content); got != "\xf5" {
		t.Fatalf("GET body %q", got)
	}
	if cf, err := resp.ContentFormat(); err != nil || cf != message.AppCBOR {
		t.Fatalf("GET content format %v %v", cf, err)
	}

	resp, err = cc.Delete(ctx5(t), "/ps/state/lamp")
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, resp, codes.Deleted)
	resp, err = cc.Get(ctx5(t), "/ps/state/lamp")
	if err != nil {
		t.Fatal(err)
	}
	if d := expectCode(t, resp, codes.NotFound); !strings.Contains(d, "no retained message on state/lamp") {
		t.Fatalf("diagnostic %q", d)
	}

	// retain=true on POST makes it retained as well.
	resp, err = cc.Post(ctx5(t), "/ps/state/fan", message.TextPlain, bytes.NewReader([]byte("on")), message.Option{ID: message.URIQuery, Value: []byte("retain=true")})
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, resp, codes.Changed)
	if ms, _ := e.b.Retained("state/fan"); len(ms) != 1 || string(ms[0].Payload) != "on" {
		t.Fatalf("retain=true: %+v", ms)
	}
	// An MQTT client sees it as retained, with the content type. (Last:
	// mochi v2.7.9 races between a subscriber's retained scan and a
	// concurrent retained write; see README.)
	sub := mqtttestDial(t, e)
	sub.Sub("state/#", 1)
	if m := sub.Next(); !m.Retain || string(m.Payload) != "on" || m.Properties.ContentType != "text/plain" {
		t.Fatalf("retained over MQTT: %+v", m)
	}
}

// notifications collects observe notifications.
type notifications struct {
	mu sync.Mutex
	ms []*pool.Message
	ch chan struct{}
}

func newNotifications() *notifications { return &notifications{ch: make(chan struct{}, 1000)} }

func (n *notifications) add(m *pool.Message) {
	c := pool.NewMessage(m.Context())
	if err := m.Clone(c); err != nil {
		panic(err)
	}
	n.mu.Lock()
	n.ms = append(n.ms, c)
	n.mu.Unlock()
	n.ch <- struct{}{}
}

// next waits for the i-th notification (0 = the registration response).
func (n *notifications) next(t *testing.T, i int) *pool.Message {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		n.mu.Lock()
		if len(n.ms) > i {
			m := n.ms[i]
			n.mu.Unlock()
			return m
		}
		n.mu.Unlock()
		select {
		case <-n.ch:
		case <-deadline:
			t.Fatalf("no notification %d", i)
		}
	}
}

func (n *notifications) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.ms)
}

// testObserve runs the observe scenario on any client connection.
func testObserve(t *testing.T, e *testEnv, cc coapConn) {
	pub := mqtttestDial(t, e)
	pub.Pub(&paho.Publish{Topic: "obs/a", QoS: 1, Retain: true, Payload: []byte("retained"),
		Properties: &paho.PublishProperties{ContentType: "application/json"}})

	n := newNotifications()
	obs, err := cc.Observe(ctx5(t), "/ps/obs/a", n.add)
	if err != nil {
		t.Fatal(err)
	}
	first := n.next(t, 0)
	if first.Code() != codes.Content || body(t, first) != "retained" {
		t.Fatalf("first: %v %q", first.Code(), body(t, first))
	}
	if cf, _ := first.ContentFormat(); cf != message.AppJSON {
		t.Fatalf("first content format %v", cf)
	}
	pub.Pub(&paho.Publish{Topic: "obs/a", QoS: 1, Payload: []byte("live-1")})
	pub.Pub(&paho.Publish{Topic: "obs/a", QoS: 0, Payload: []byte("live-2")})
	if got := body(t, n.next(t, 1)); got != "live-1" {
		t.Fatalf("notification 1: %q", got)
	}
	if got := body(t, n.next(t, 2)); got != "live-2" {
		t.Fatalf("notification 2: %q", got)
	}
	testwait.For(t, "one observer", func() bool { return observerCount(e.s) == 1 })
	if err := obs.Cancel(ctx5(t)); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "observation ended", func() bool { return observerCount(e.s) == 0 })
	pub.Pub(&paho.Publish{Topic: "obs/a", QoS: 1, Payload: []byte("after")})
	time.Sleep(100 * time.Millisecond)
	if c := n.count(); c != 3 {
		t.Fatalf("%d notifications after deregistration, want 3", c)
	}
}

func observerCount(s *Server) int {
	s.obs.mu.Lock()
	defer s.obs.mu.Unlock()
	return s.obs.count
}

func TestObserveUDP(t *testing.T) {
	e := start(t, Config{})
	testObserve(t, e, dialUDP(t, e.udp))
}

func TestObserveWildcardRetainedFirstWithTopic(t *testing.T) {
	e := start(t, Config{})
	pub := mqtttestDial(t, e)
	pub.Pub(&paho.Publish{Topic: "w/1/t", QoS: 1, Retain: true, Payload: []byte("r1")})
	pub.Pub(&paho.Publish{Topic: "w/2/t", QoS: 1, Retain: true, Payload: []byte("r2")})
	cc := dialUDP(t, e.udp)
	n := newNotifications()
	// '+' travels as a Uri-Path option of its own.
	obs, err := cc.Observe(ctx5(t), "/ps/w/+/t", n.add)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = obs.Cancel(ctx5(t)) }()
	if first := n.next(t, 0); first.Code() != codes.Content || body(t, first) != "" {
		t.Fatalf("first: %v %q", first.Code(), body(t, first))
	}
	got := map[string]string{}
	for i := 1; i <= 2; i++ {
		m := n.next(t, i)
		loc, _ := m.Options().LocationPath()
		got[loc] = body(t, m)
	}
	if got["/ps/w/1/t"] != "r1" || got["/ps/w/2/t"] != "r2" {
		t.Fatalf("retained notifications: %v", got)
	}
	pub.Pub(&paho.Publish{Topic: "w/3/t", QoS: 1, Payload: []byte("live")})
	if m := n.next(t, 3); body(t, m) != "live" {
		t.Fatalf("live: %q", body(t, m))
	}
	// A topic with no message registers too, with an empty first response.
	n2 := newNotifications()
	obs2, err := cc.Observe(ctx5(t), "/ps/nothing/yet", n2.add)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = obs2.Cancel(ctx5(t)) }()
	if first := n2.next(t, 0); first.Code() != codes.Content || body(t, first) != "" {
		t.Fatalf("empty topic first: %v %q", first.Code(), body(t, first))
	}
	pub.Pub(&paho.Publish{Topic: "nothing/yet", QoS: 0, Payload: []byte("now")})
	if m := n2.next(t, 1); body(t, m) != "now" {
		t.Fatalf("empty topic live: %q", body(t, m))
	}
}

func TestObserveSequenceWrapsAround(t *testing.T) {
	e := start(t, Config{initialSeq: 0xFFFFFD}) // the first response gets 0xFFFFFE
	pub := mqtttestDial(t, e)
	cc := dialUDP(t, e.udp)
	n := newNotifications()
	obs, err := cc.Observe(ctx5(t), "/ps/wrap", n.add)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = obs.Cancel(ctx5(t)) }()
	if v, _ := n.next(t, 0).Observe(); v != 0xFFFFFE {
		t.Fatalf("first observe value %x", v)
	}
	var seqs []uint32
	for i := 1; i <= 3; i++ {
		pub.Pub(&paho.Publish{Topic: "wrap", QoS: 1, Payload: []byte{byte(i)}})
		m := n.next(t, i) // the go-coap client drops notifications it sees as stale (RFC 7641 §3.4)
		v, _ := m.Observe()
		seqs = append(seqs, v)
	}
	if seqs[0] != 0xFFFFFF || seqs[1] != 0 || seqs[2] != 1 {
		t.Fatalf("observe values %x, want ffffff 0 1", seqs)
	}
}

func TestBlockwiseBothWaysAnd413(t *testing.T) {
	e := start(t, Config{MaxPayload: 8000})
	sub := e.subscriber(t, "big/#")
	cc := dialUDP(t, e.udp, options.WithBlockwise(true, blockwise.SZX256, 5*time.Second))
	big := bytes.Repeat([]byte("0123456789"), 700) // 7000 bytes: 28 blocks of 256
	resp, err := cc.Put(ctx5(t), "/ps/big/x", message.AppOctets, bytes.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, resp, codes.Changed)
	if m := sub.Next(); !bytes.Equal(m.Payload, big) {
		t.Fatalf("MQTT got %d bytes, want %d", len(m.Payload), len(big))
	}
	resp, err = cc.Get(ctx5(t), "/ps/big/x")
	if err != nil {
		t.Fatal(err)
	}
	if got := expectCode(t, resp, codes.Content); got != string(big) {
		t.Fatalf("GET got %d bytes, want %d", len(got), len(big))
	}
	// Notifications are sent block-wise too.
	n := newNotifications()
	obs, err := cc.Observe(ctx5(t), "/ps/big/z", n.add)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = obs.Cancel(ctx5(t)) }()
	n.next(t, 0)
	resp, err = cc.Post(ctx5(t), "/ps/big/z", message.AppOctets, bytes.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, resp, codes.Changed)
	if got := body(t, n.next(t, 1)); got != string(big) {
		t.Fatalf("notification got %d bytes, want %d", len(got), len(big))
	}
	sub.Next()

	tooBig := bytes.Repeat([]byte("x"), 9000)
	resp, err = cc.Post(ctx5(t), "/ps/big/y", message.AppOctets, bytes.NewReader(tooBig))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code() != codes.RequestEntityTooLarge {
		t.Fatalf("code %v, want 4.13", resp.Code())
	}
	if size1, err := resp.GetOptionUint32(message.Size1); err != nil || size1 != 8000 {
		t.Fatalf("Size1 %d %v, want 8000", size1, err)
	}
	sub.None(100 * time.Millisecond)
}

func TestWellKnownCore(t *testing.T) {
	e := start(t, Config{ExtraLinks: func() []string { return []string{`</s/t>;rt="temperature";ct=50`} }})
	cc := dialUDP(t, e.udp)
	resp, err := cc.Get(ctx5(t), "/.well-known/core")
	if err != nil {
		t.Fatal(err)
	}
	links := expectCode(t, resp, codes.Content)
	if cf, _ := resp.ContentFormat(); cf != message.AppLinkFormat {
		t.Fatalf("content format %v", cf)
	}
	for _, want := range []string{`</ps>;rt="core.ps"`, `obs`, `</s/t>;rt="temperature"`} {
		if !strings.Contains(links, want) {
			t.Fatalf("links %q lack %q", links, want)
		}
	}
	resp, err = cc.Get(ctx5(t), "/.well-known/core", message.Option{ID: message.URIQuery, Value: []byte("rt=core.ps")})
	if err != nil {
		t.Fatal(err)
	}
	if links := expectCode(t, resp, codes.Content); links != `</ps>;rt="core.ps";ct=40;title="MQTT topics: /ps/{topic}"` {
		t.Fatalf("filtered links %q", links)
	}
}

func TestContentFormatMapping(t *testing.T) {
	for cf, ct := range contentFormats {
		got, ok := contentFormat(ct)
		if !ok || got != cf {
			t.Errorf("%q -> %d, want %d", ct, got, cf)
		}
	}
	for ct, want := range map[string]message.MediaType{
		"text/plain; charset=utf-8": 0, "Application/JSON": 50, "application/json;charset=UTF-8": 50,
	} {
		if got, ok := contentFormat(ct); !ok || got != want {
			t.Errorf("%q -> %d %v, want %d", ct, got, ok, want)
		}
	}
	if _, ok := contentFormat("application/x-unknown"); ok {
		t.Error("unknown type mapped")
	}
}
