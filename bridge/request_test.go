package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/internal/mqtttest"
)

// respond5 runs an MQTT 5 device that answers every request on filter with
// "re:"+payload as text/plain.
func respond5(t *testing.T, addr, filter string) {
	t.Helper()
	mqtttest.Responder(t, addr, "device5", filter, func(req *paho.Publish) *paho.Publish {
		return &paho.Publish{Payload: append([]byte("re:"), req.Payload...),
			Properties: &paho.PublishProperties{ContentType: "text/plain"}}
	})
}

func TestRequestMQTT5Responder(t *testing.T) {
	b, addr := start(t, bridge.Config{})
	respond5(t, addr, "devices/+/cmd")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := b.Request(ctx, bridge.Message{Topic: "devices/7/cmd", Payload: []byte("ping"), QoS: 1}, "")
	if err != nil || string(r.Payload) != "re:ping" || r.ContentType != "text/plain" {
		t.Fatalf("reply %+v, %v", r, err)
	}
}

func TestRequestManyConcurrentGetTheirOwnReplies(t *testing.T) {
	b, addr := start(t, bridge.Config{})
	respond5(t, addr, "devices/+/cmd")
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			want := fmt.Sprint("n", i)
			r, err := b.Request(ctx, bridge.Message{Topic: fmt.Sprintf("devices/%d/cmd", i), Payload: []byte(want), QoS: 1}, "")
			if err != nil || string(r.Payload) != "re:"+want {
				errs <- fmt.Errorf("request %d: %q %v", i, r.Payload, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRequestMQTT311ResponderOnFixedReplyTopic(t *testing.T) {
	b, addr := start(t, bridge.Config{})
	dev := mqtttest.Dial3(t, addr, "device3", false)
	dev.Sub("valves/3/set", 1)
	go func() {
		select {
		case m := <-dev.Msgs:
			dev.Publish("valves/3/reply", 1, false, append([]byte("done:"), m.Payload()...)).WaitTimeout(5 * time.Second)
		case <-time.After(5 * time.Second):
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := b.Request(ctx, bridge.Message{Topic: "valves/3/set", Payload: []byte("open"), QoS: 1}, "valves/3/reply")
	if err != nil || string(r.Payload) != "done:open" {
		t.Fatalf("reply %q, %v", r.Payload, err)
	}
}

func TestRequestTimeoutAndLateReply(t *testing.T) {
	b, addr := start(t, bridge.Config{})
	dev := mqtttest.Dial(t, addr, mqtttest.Options{ClientID: "slow"})
	dev.Sub("slow/cmd", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := b.Request(ctx, bridge.Message{Topic: "slow/cmd", QoS: 1}, "")
	if !errors.Is(err, bridge.ErrNoReply) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want ErrNoReply wrapping DeadlineExceeded", err)
	}
	m := dev.Next()
	dev.Pub(&paho.Publish{Topic: m.Properties.ResponseTopic, QoS: 1, Payload: []byte("too late"),
		Properties: &paho.PublishProperties{CorrelationData: m.Properties.CorrelationData}})
	for i := 0; i < 100 && b.LateReplies() == 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if b.LateReplies() != 1 {
		t.Fatalf("late replies %d, want 1", b.LateReplies())
	}
}

func TestReplyTopicsStayOutOfWildcardSubscriptions(t *testing.T) {
	b, addr := start(t, bridge.Config{})
	spy := mqtttest.Dial(t, addr, mqtttest.Options{ClientID: "spy"})
	spy.Sub("#", 1)
	respond5(t, addr, "q/cmd")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := b.Request(ctx, bridge.Message{Topic: "q/cmd", Payload: []byte("x"), QoS: 1}, ""); err != nil {
		t.Fatal(err)
	}
	if m := spy.Next(); m.Topic != "q/cmd" {
		t.Fatalf("spy saw %s", m.Topic)
	}
	spy.None(200 * time.Millisecond) // the reply on $gateway/reply/... is not seen by '#'
}
