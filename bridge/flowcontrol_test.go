package bridge_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/internal/mqtttest"
)

// dialFlowControlled connects an MQTT 5 subscriber that announces a Receive
// Maximum of recvMax [MQTT-3.1.2.11.3], subscribes to fc/# at QoS 1 and
// hands every received publish to onMsg (in order, on paho's routing
// goroutine). With manualAck the test acks through the returned client's Ack;
// otherwise paho acks after onMsg.
func dialFlowControlled(t *testing.T, addr, id string, recvMax uint16, manualAck bool, onMsg func(*paho.Publish)) *paho.Client {
	t.Helper()
	c := dialFlowControlledSession(t, addr, id, recvMax, manualAck, false, onMsg)
	ctx, cancel := context.WithTimeout(context.Background(), mqtttest.Timeout)
	defer cancel()
	ack, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "fc/#", QoS: 1}}})
	if err != nil || len(ack.Reasons) != 1 || ack.Reasons[0] != 1 {
		t.Fatalf("subscribe: %v %+v", err, ack)
	}
	return c
}

// dialFlowControlledSession is dialFlowControlled without the subscription
// and with, if persistent, a session that outlives the connection and is
// resumed if present.
func dialFlowControlledSession(t *testing.T, addr, id string, recvMax uint16, manualAck, persistent bool, onMsg func(*paho.Publish)) *paho.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, mqtttest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{
		Conn:                       conn,
		EnableManualAcknowledgment: manualAck,
		SendAcksInterval:           time.Millisecond,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { onMsg(pr.Packet); return true, nil },
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), mqtttest.Timeout)
	defer cancel()
	cp := &paho.Connect{ClientID: id, CleanStart: !persistent, KeepAlive: 30,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &recvMax}}
	if persistent {
		expiry := uint32(60)
		cp.Properties.SessionExpiryInterval = &expiry
	}
	if _, err := c.Connect(ctx, cp); err != nil {
		_ = conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{})
		select {
		case <-c.Done():
		case <-time.After(mqtttest.Timeout):
		}
	})
	return c
}

// waitInflight waits until the broker tracks no QoS 1/2 message any more.
func waitInflight(t *testing.T, b *bridge.Broker, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for b.Stats().Inflight != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("inflight still %d after %v", b.Stats().Inflight, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A QoS 1 subscriber with a small Receive Maximum gets every message of a
// burst much larger than its window, in order per publisher: the broker
// parks what exceeds the window and sends it as PUBACKs free the quota
// [MQTT-4.9]. This used to stall (parked messages went out one per packet
// the client sent and were then forgotten, so their PUBACKs never returned
// the quota).
func TestFlowControlledQoS1SubscriberGetsBurstInOrder(t *testing.T) {
	const (
		publishers = 4
		perPub     = 5000
		n          = publishers * perPub
	)
	b, addr := start(t, bridge.Config{})

	var mu sync.Mutex
	next := make([]int, publishers) // next expected sequence number per publisher
	got := 0
	var bad []string
	all := make(chan struct{})
	dialFlowControlled(t, addr, "fc-sub", 20, false, func(p *paho.Publish) {
		mu.Lock()
		defer mu.Unlock()
		pub, seq, err := parsePayload(p.Payload)
		switch {
		case err != nil || pub >= publishers:
			bad = append(bad, fmt.Sprintf("payload %q", p.Payload))
		case p.QoS != 1:
			bad = append(bad, fmt.Sprintf("qos %d", p.QoS))
		case seq != next[pub]:
			bad = append(bad, fmt.Sprintf("publisher %d: got %d, want %d", pub, seq, next[pub]))
			next[pub] = seq + 1
		default:
			next[pub]++
		}
		if got++; got == n {
			close(all)
		}
	})

	begin := time.Now()
	deadline := begin.Add(60 * time.Second)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range perPub {
				// The broker keeps at most MaximumInflight (8192) QoS 1/2
				// messages per client and drops beyond that; this test is
				// about flow control, not that limit, so publishers back
				// off while the subscriber's backlog is large.
				for b.Stats().Inflight > 4000 {
					if time.Now().After(deadline) {
						return // reported below
					}
					time.Sleep(time.Millisecond)
				}
				err := b.Publish(context.Background(), bridge.Message{
					Topic: "fc/" + strconv.Itoa(p), QoS: 1, Payload: fmt.Appendf(nil, "%d:%d", p, i)})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	published := time.Since(begin)

	select {
	case <-all:
	case <-time.After(time.Until(deadline)):
		mu.Lock()
		t.Fatalf("received %d of %d within 60s (published in %v); broker %+v", got, n, published, b.Stats())
		mu.Unlock()
	}
	took := time.Since(begin)
	mu.Lock()
	if len(bad) > 0 {
		t.Errorf("%d out-of-order or bad messages, first: %v", len(bad), bad[:min(len(bad), 5)])
	}
	mu.Unlock()
	t.Logf("%d QoS 1 messages to a Receive Maximum 20 subscriber: published in %v, all received after %v (%.0f msg/s)",
		n, published.Round(time.Millisecond), took.Round(time.Millisecond), float64(n)/took.Seconds())
	waitInflight(t, b, 5*time.Second)
	if s := b.Stats(); s.MessagesDropped != 0 {
		t.Errorf("dropped %d", s.MessagesDropped)
	}
}

// The broker never has more unacknowledged QoS 1 messages out to a client
// than its Receive Maximum, sends the next parked message as soon as a PUBACK
// frees the quota, and keeps parked messages in flight until acknowledged.
func TestFlowControlHonoursReceiveMaximum(t *testing.T) {
	const recvMax, n = 5, 30
	b, addr := start(t, bridge.Config{})
	msgs := make(chan *paho.Publish, n)
	c := dialFlowControlled(t, addr, "fc-strict", recvMax, true, func(p *paho.Publish) { msgs <- p })
	for i := range n {
		if err := b.Publish(context.Background(), bridge.Message{Topic: "fc/x", QoS: 1, Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if s := b.Stats(); s.Inflight != n {
		t.Fatalf("inflight %d, want %d (parked messages must stay in flight)", s.Inflight, n)
	}
	recv := func(want int) *paho.Publish {
		t.Helper()
		select {
		case p := <-msgs:
			if string(p.Payload) != strconv.Itoa(want) {
				t.Fatalf("got %q, want %d", p.Payload, want)
			}
			return p
		case <-time.After(mqtttest.Timeout):
			t.Fatalf("message %d not received", want)
			return nil
		}
	}
	none := func() {
		t.Helper()
		select {
		case p := <-msgs:
			t.Fatalf("message %q beyond the Receive Maximum of %d", p.Payload, recvMax)
		case <-time.After(200 * time.Millisecond):
		}
	}
	var window []*paho.Publish
	for i := range recvMax {
		window = append(window, recv(i))
	}
	none()
	// One PUBACK at a time: exactly one more message each time.
	for i := recvMax; i < n; i++ {
		if err := c.Ack(window[0]); err != nil {
			t.Fatal(err)
		}
		window = append(window[1:], recv(i))
		if i%5 == 0 {
			none()
		}
	}
	none()
	for _, p := range window {
		if err := c.Ack(p); err != nil {
			t.Fatal(err)
		}
	}
	waitInflight(t, b, mqtttest.Timeout)
}

// Parked messages stay in flight: a resumed session gets them again, in
// order and still within its Receive Maximum.
func TestFlowControlParkedMessagesSurviveReconnect(t *testing.T) {
	const recvMax, n = 5, 20
	b, addr := start(t, bridge.Config{})
	first := make(chan *paho.Publish, n)
	c := dialFlowControlledSession(t, addr, "fc-resume", recvMax, true, true, func(p *paho.Publish) { first <- p })
	ctx, cancel := context.WithTimeout(context.Background(), mqtttest.Timeout)
	defer cancel()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "fc/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := b.Publish(context.Background(), bridge.Message{Topic: "fc/r", QoS: 1, Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range recvMax {
		select {
		case p := <-first:
			if string(p.Payload) != strconv.Itoa(i) {
				t.Fatalf("got %q, want %d", p.Payload, i)
			}
		case <-time.After(mqtttest.Timeout):
			t.Fatalf("message %d not received", i)
		}
	}
	// Leave without acknowledging anything; the session keeps all n.
	if err := c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	deadline := time.Now().Add(mqtttest.Timeout)
	for b.Stats().ClientsConnected != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s := b.Stats(); s.Inflight != n {
		t.Fatalf("inflight %d after disconnect, want %d", s.Inflight, n)
	}

	var mu sync.Mutex
	var got []string
	maxOut, out := 0, 0
	all := make(chan struct{})
	var c2 *paho.Client
	acks := make(chan *paho.Publish, n)
	// The session keeps the subscription (subscribing again would also
	// clash with the resent packet ids: mochi keeps the ids of both
	// directions in one map).
	c2 = dialFlowControlledSession(t, addr, "fc-resume", recvMax, true, true, func(p *paho.Publish) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, string(p.Payload))
		out++
		maxOut = max(maxOut, out)
		acks <- p
		if len(got) == n {
			close(all)
		}
	})
	go func() { // acknowledge slowly, so a broker over the window would show
		for p := range acks {
			time.Sleep(2 * time.Millisecond)
			mu.Lock()
			out--
			mu.Unlock()
			_ = c2.Ack(p)
		}
	}()
	defer close(acks)
	select {
	case <-all:
	case <-time.After(mqtttest.Timeout):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("after reconnect got %d of %d: %v", len(got), n, got)
	}
	mu.Lock()
	for i, p := range got {
		if p != strconv.Itoa(i) {
			t.Errorf("after reconnect message %d is %q: %v", i, p, got)
			break
		}
	}
	if maxOut > recvMax {
		t.Errorf("%d unacknowledged messages out at once, Receive Maximum is %d", maxOut, recvMax)
	}
	mu.Unlock()
	waitInflight(t, b, mqtttest.Timeout)
}

// MQTT 3.1.1 has no Receive Maximum: a QoS 1 subscriber is not flow
// controlled and gets a burst unthrottled and in order.
func TestMQTT311QoS1SubscriberNotFlowControlled(t *testing.T) {
	const n = 1000 // mqtttest.Client3 buffers 1024
	b, addr := start(t, bridge.Config{})
	sub := mqtttest.Dial3(t, addr, "fc-v3", false)
	sub.Sub("fc/#", 1)
	for i := range n {
		if err := b.Publish(context.Background(), bridge.Message{Topic: "fc/v3", QoS: 1, Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if m := sub.Next(); string(m.Payload()) != strconv.Itoa(i) {
			t.Fatalf("got %q, want %d", m.Payload(), i)
		}
	}
	waitInflight(t, b, mqtttest.Timeout)
}

func parsePayload(b []byte) (pub, seq int, err error) {
	p, s, ok := strings.Cut(string(b), ":")
	if !ok {
		return 0, 0, fmt.Errorf("no colon")
	}
	if pub, err = strconv.Atoi(p); err != nil {
		return 0, 0, err
	}
	seq, err = strconv.Atoi(s)
	return pub, seq, err
}
