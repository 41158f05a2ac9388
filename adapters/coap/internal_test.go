package coapadapter

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/edgebridge/gateway/mapping"
)

func TestDedupCacheExpiresByBuckets(t *testing.T) {
	c := newDedupCache(800*time.Millisecond, 1000)
	msg := pool.NewMessage(t.Context())
	msg.SetCode(codes.Changed)
	msg.SetToken([]byte{1, 2})
	msg.SetType(message.Acknowledgement)
	msg.SetMessageID(7)
	for i := range 10 {
		if err := c.Store(string(rune('a'+i)), msg); err != nil {
			t.Fatal(err)
		}
	}
	if c.len() != 10 {
		t.Fatalf("%d entries", c.len())
	}
	got := pool.NewMessage(t.Context())
	if ok, err := c.Load("c", got); !ok || err != nil || got.Code() != codes.Changed || !bytes.Equal(got.Token(), []byte{1, 2}) {
		t.Fatalf("load: %v %v %v", ok, err, got)
	}
	c.CheckExpirations(time.Now().Add(500 * time.Millisecond))
	if c.len() != 10 {
		t.Fatalf("expired early: %d entries", c.len())
	}
	c.CheckExpirations(time.Now().Add(time.Second)) // past lifetime + width
	if c.len() != 0 || len(c.buckets) != 0 {
		t.Fatalf("not expired: %d entries, %d buckets", c.len(), len(c.buckets))
	}
	// The cap drops the oldest bucket first.
	small := newDedupCache(time.Hour, 4)
	for i := range 3 {
		_ = small.Store(string(rune('a'+i)), msg)
	}
	small.buckets[0].start = time.Now().Add(-time.Hour) // force a new bucket
	small.buckets = append(small.buckets, dedupBucket{start: time.Now(), gen: 99})
	small.nextGen = 99
	for i := range 2 {
		_ = small.Store(string(rune('x'+i)), msg)
	}
	if small.len() != 2 {
		t.Fatalf("cap: %d entries", small.len())
	}
}

// Mapping routes reuse publish and observe.
func TestMountedRouteReusesHandlers(t *testing.T) {
	e := start(t, Config{ExtraLinks: func() []string { return []string{`</s>;rt="sensor";obs`} }})
	qos := 1
	table, err := mapping.Compile([]mapping.RouteSpec{{Name: "sensor", CoAP: &mapping.CoAPSpec{Path: "/s/{id}"},
		Topic: "sensors/{id}/t", QoS: &qos, Retain: true, ContentType: "application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	e.s.SetTable(table)
	sub := e.subscriber(t, "sensors/#")
	cc := dialUDP(t, e.udp)
	req, err := cc.NewPostRequest(ctx5(t), "/s/17", message.TextPlain, bytes.NewReader([]byte("21")))
	if err != nil {
		t.Fatal(err)
	}
	req.Remove(message.ContentFormat) // the route's content type applies
	resp, err := cc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, resp, codes.Changed)
	if m := sub.Next(); m.Topic != "sensors/17/t" || m.QoS != 1 || m.Properties.ContentType != "application/json" {
		t.Fatalf("got %s qos %d %q", m.Topic, m.QoS, m.Properties.ContentType)
	}
	n := newNotifications()
	obs, err := cc.Observe(ctx5(t), "/s/17", n.add)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = obs.Cancel(ctx5(t)) }()
	if got := body(t, n.next(t, 0)); got != "21" {
		t.Fatalf("first notification %q", got)
	}
	mqtttestDial(t, e).Pub(&paho.Publish{Topic: "sensors/17/t", QoS: 0, Payload: []byte("22")})
	if got := body(t, n.next(t, 1)); got != "22" {
		t.Fatalf("notification %q", got)
	}
	resp, err = cc.Get(ctx5(t), "/.well-known/core")
	if err != nil {
		t.Fatal(err)
	}
	if links := expectCode(t, resp, codes.Content); !strings.Contains(links, `</s>;rt="sensor";obs`) {
		t.Fatalf("links %q", links)
	}
}
