package bridge_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"go.uber.org/goleak"

	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/internal/brokertest"
	"github.com/edgebridge/gateway/internal/mqtttest"
)

// leakOptions grows in files with build tags that link leaky libraries.
var leakOptions []goleak.Option

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, leakOptions...) }

// start runs a broker with one TCP listener on a free port.
func start(t *testing.T, cfg bridge.Config) (*bridge.Broker, string) {
	t.Helper()
	return brokertest.Start(t, cfg)
}

func TestPublishReachesMQTT5SubscriberWithProperties(t *testing.T) {
	b, addr := start(t, bridge.Config{})
	sub := mqtttest.Dial(t, addr, mqtttest.Options{ClientID: "sub"})
	sub.Sub("sensors/#", 2)
	for qos := byte(0); qos <= 2; qos++ {
		err := b.Publish(context.Background(), bridge.Message{
			Topic: "sensors/1/t", Payload: []byte("21.5"), QoS: qos,
			ContentType: "text/plain", ResponseTopic: "replies/1", CorrelationData: []byte{1, 2},
			UserProperties: map[string]string{"unit": "C"}, Expiry: time.Minute,
		})
		if err != nil {
			t.Fatal(err)
		}
		m := sub.Next()
		if m.Topic != "sensors/1/t" || string(m.Payload) != "21.5" || m.QoS != qos {
			t.Fatalf("qos %d: got %s %q qos %d", qos, m.Topic, m.Payload, m.QoS)
		}
		p := m.Properties
		if p.ContentType != "text/plain" || p.ResponseTopic != "replies/1" || string(p.CorrelationData) != "\x01\x02" ||
			p.User.Get("unit") != "C" || p.MessageExpiry == nil || *p.MessageExpiry == 0 || *p.MessageExpiry > 60 {
			t.Fatalf("qos %d: properties %+v", qos, p)
		}
	}
}

func TestSubscribeGetsClientPublishesAndRetainedFirst(t *testing.T) {
	b, addr := start(t, bridge.Config{})
	pub := mqtttest.Dial(t, addr, mqtttest.Options{ClientID: "pub"})
	pub.Pub(&paho.Publish{Topic: "a/b", QoS: 1, Retain: true, Payload: []byte("old")})

	got := make(chan bridge.Message, 10)
	s, err := b.Subscribe("a/+", bridge.SubOptions{QoS: 1, Queue: 8}, func(m bridge.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := recv(t, got)
	if m.Topic != "a/b" || string(m.Payload) != "old" || !m.Retain {
		t.Fatalf("retained first: %+v", m)
	}
	pub.Pub(&paho.Publish{Topic: "a/c", QoS: 2, Payload: []byte("new"),
		Properties: &paho.PublishProperties{ContentType: "application/json"}})
	m = recv(t, got)
	if m.Topic != "a/c" || string(m.Payload) != "new" || m.Retain || m.QoS != 1 || m.ContentType != "application/json" {
		t.Fatalf("live: %+v", m)
	}
	s.Close()
	pub.Pub(&paho.Publish{Topic: "a/d", QoS: 1, Payload: []byte("after close")})
	select {
	case m := <-got:
		t.Fatalf("delivered after Close: %+v", m)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestRetainedReadAndClear(t *testing.T) {
	b, _ := start(t, bridge.Config{})
	ctx := context.Background()
	if err := b.Publish(ctx, bridge.Message{Topic: "state/x", Payload: []byte("on"), QoS: 1, Retain: true, ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	ms, err := b.Retained("state/x")
	if err != nil || len(ms) != 1 || string(ms[0].Payload) != "on" || ms[0].ContentType != "text/plain" {
		t.Fatalf("retained: %+v %v", ms, err)
	}
	if err := b.Publish(ctx, bridge.Message{Topic: "state/x", QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	if ms, _ := b.Retained("state/x"); len(ms) != 0 {
		t.Fatalf("not cleared: %+v", ms)
	}
}

func TestFullQueueDropsAndCounts(t *testing.T) {
	b, _ := start(t, bridge.Config{})
	release := make(chan struct{})
	s, err := b.Subscribe("q", bridge.SubOptions{Queue: 1}, func(bridge.Message) { <-release })
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := b.Publish(context.Background(), bridge.Message{Topic: "q"}); err != nil {
			t.Fatal(err)
		}
	}
	if s.Dropped() < 8 {
		t.Fatalf("dropped %d, want at least 8 of 10 with a queue of 1", s.Dropped())
	}
	close(release)
	s.Close()
}

func TestInvalidTopicsAndFilters(t *testing.T) {
	b, _ := start(t, bridge.Config{})
	for _, topic := range []string{"", "a/+", "a/#", "$SYS/x", "a\x00b", string([]byte{0xff})} {
		err := b.Publish(context.Background(), bridge.Message{Topic: topic})
		if !errors.Is(err, bridge.ErrInvalidTopic) {
			t.Errorf("publish %q: %v, want ErrInvalidTopic", topic, err)
		}
	}
	for _, f := range []string{"", "a/#/b", "a+/b", "#x", "$share/g/a"} {
		if _, err := b.Subscribe(f, bridge.SubOptions{}, func(bridge.Message) {}); !errors.Is(err, bridge.ErrInvalidTopic) {
			t.Errorf("subscribe %q: %v, want ErrInvalidTopic", f, err)
		}
	}
	for _, f := range []string{"#", "+", "/", "a//b", "/+/#", "+/+"} {
		if err := bridge.ValidateFilter(f); err != nil {
			t.Errorf("filter %q: %v", f, err)
		}
	}
}

func TestPublishAfterShutdown(t *testing.T) {
	b, err := bridge.New(bridge.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(context.Background(), bridge.Message{Topic: "x"}); !errors.Is(err, bridge.ErrClosed) {
		t.Fatalf("before start: %v", err)
	}
}

func recv(t *testing.T, ch chan bridge.Message) bridge.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
		return bridge.Message{}
	}
}

func TestSubscribeWithRetainedReturnsThemInstead(t *testing.T) {
	b, _ := start(t, bridge.Config{})
	ctx := context.Background()
	for _, topic := range []string{"r/1", "r/2"} {
		if err := b.Publish(ctx, bridge.Message{Topic: topic, Payload: []byte(topic), QoS: 2, Retain: true}); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan bridge.Message, 10)
	s, retained, err := b.SubscribeWithRetained("r/#", bridge.SubOptions{QoS: 1}, func(m bridge.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(retained) != 2 || !retained[0].Retain || retained[0].QoS != 1 {
		t.Fatalf("retained %+v", retained)
	}
	select {
	case m := <-got:
		t.Fatalf("retained message passed to the handler too: %+v", m)
	case <-time.After(50 * time.Millisecond):
	}
	if err := b.Publish(ctx, bridge.Message{Topic: "r/3", Payload: []byte("live"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, got); m.Topic != "r/3" || m.Retain {
		t.Fatalf("live %+v", m)
	}
}
