package egress

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/internal/testwait"
	"github.com/edgebridge/gateway/mapping"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startBroker(t *testing.T) *bridge.Broker {
	t.Helper()
	b, err := bridge.New(bridge.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Shutdown(context.Background()) })
	return b
}

func fastDelivery() mapping.Delivery {
	return mapping.Delivery{Timeout: time.Second, MaxInFlight: 4, BackoffMin: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
		QueueMaxItems: 1000, QueueMaxBytes: 1 << 20, Overflow: mapping.OverflowDropOldest}
}

func startEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return e
}

// recorder is a Deliverer that records what it got and answers with fail
// (nil: success).
type recorder struct {
	mu   sync.Mutex
	got  []*Delivery
	fail func(d *Delivery) error
	resp Response
}

func (r *recorder) Deliver(_ context.Context, d *Delivery) (Response, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		if err := r.fail(d); err != nil {
			return Response{}, err
		}
	}
	c := *d
	c.Message.Payload = append([]byte(nil), d.Message.Payload...)
	r.got = append(r.got, &c)
	return r.resp, nil
}

func (r *recorder) payloads() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.got))
	for i, d := range r.got {
		out[i] = string(d.Message.Payload)
	}
	return out
}

func publish(t *testing.T, b *bridge.Broker, m bridge.Message) {
	t.Helper()
	if err := b.Publish(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

func TestDeliversWithCapturedVarsAndProperties(t *testing.T) {
	b := startBroker(t)
	rec := &recorder{}
	startEngine(t, Config{Broker: b, Routes: []Route{{
		Name: "alerts", Subscribe: mapping.MustParseTopicTemplate("alerts/{site}/{kind...}"), Delivery: fastDelivery(), Deliverer: rec,
	}}})
	publish(t, b, bridge.Message{Topic: "alerts/north/fire/big", Payload: []byte("hot"), QoS: 1, ContentType: "text/plain",
		UserProperties: map[string]string{"k": "v"}, CorrelationData: []byte{1}, Expiry: time.Hour})
	publish(t, b, bridge.Message{Topic: "alerts/north", Payload: []byte("no kind")}) // the filter matches, the template does not
	publish(t, b, bridge.Message{Topic: "other/x", Payload: []byte("no")})
	testwait.For(t, "delivery", func() bool { return len(rec.payloads()) == 1 })
	d := rec.got[0]
	if d.Route != "alerts" || d.Message.Topic != "alerts/north/fire/big" || d.Message.ContentType != "text/plain" ||
		d.Message.UserProperties["k"] != "v" || d.Message.QoS != 1 || d.Message.Time.IsZero() || d.Attempt != 0 {
		t.Errorf("delivery = %+v", d)
	}
	if v := d.Vars.Map(); v["site"] != "north" || v["kind"] != "fire/big" {
		t.Errorf("vars = %v", v)
	}
}

func TestEndpointDownThenBackOrdered(t *testing.T) {
	b := startBroker(t)
	var mu sync.Mutex
	down := true
	attempts := 0
	rec := &recorder{fail: func(*Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if down {
			return errors.New("connection refused")
		}
		return nil
	}}
	d := fastDelivery()
	d.Ordered, d.MaxInFlight = true, 1
	e := startEngine(t, Config{Broker: b, Routes: []Route{{Name: "o", Subscribe: mapping.MustParseTopicTemplate("o/{n}"), Delivery: d, Deliverer: rec}}})
	var want []string
	for i := range 50 {
		want = append(want, fmt.Sprint(i))
		publish(t, b, bridge.Message{Topic: "o/x", Payload: []byte(fmt.Sprint(i)), QoS: 1})
	}
	testwait.For(t, "retries", func() bool { mu.Lock(); defer mu.Unlock(); return attempts > 5 })
	mu.Lock()
	down = false
	mu.Unlock()
	testwait.For(t, "all delivered", func() bool { return len(rec.payloads()) == 50 })
	if got := rec.payloads(); !slices.Equal(got, want) {
		t.Errorf("order:\n%v\nwant\n%v", got, want)
	}
	st, _ := e.Stats("o")
	if st.Delivered != 50 || st.Retried == 0 || st.Depth != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestUnorderedEveryMessageDeliveredAfterOutage(t *testing.T) {
	b := startBroker(t)
	var mu sync.Mutex
	until := time.Now().Add(100 * time.Millisecond)
	rec := &recorder{fail: func(*Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		if time.Now().Before(until) {
			return &StatusError{Response: Response{Status: "503"}, Retryable: true}
		}
		return nil
	}}
	startEngine(t, Config{Broker: b, Routes: []Route{{Name: "u", Subscribe: mapping.MustParseTopicTemplate("u/{n}"), Delivery: fastDelivery(), Deliverer: rec}}})
	for i := range 200 {
		publish(t, b, bridge.Message{Topic: "u/x", Payload: []byte(fmt.Sprint(i)), QoS: 1})
	}
	testwait.For(t, "all delivered", func() bool { return len(rec.payloads()) == 200 })
	got := rec.payloads()
	slices.Sort(got)
	if len(slices.Compact(got)) != 200 {
		t.Errorf("duplicates or losses: %d distinct", len(got))
	}
}

func TestPermanentFailureNotRetriedAndReplied(t *testing.T) {
	b := startBroker(t)
	calls := 0
	rec := &recorder{fail: func(*Delivery) error {
		calls++
		return &StatusError{Response: Response{Status: "404", ContentType: "text/plain", Payload: []byte("no such hook")}}
	}}
	e := startEngine(t, Config{Broker: b, Routes: []Route{{Name: "p", Subscribe: mapping.MustParseTopicTemplate("p"), Delivery: fastDelivery(), Deliverer: rec}}})
	replies := make(chan bridge.Message, 1)
	sub, err := b.Subscribe("answers/#", bridge.SubOptions{QoS: 1, Queue: 4}, func(m bridge.Message) { replies <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	publish(t, b, bridge.Message{Topic: "p", Payload: []byte("x"), QoS: 1, ResponseTopic: "answers/1", CorrelationData: []byte("c1")})
	select {
	case m := <-replies:
		if string(m.Payload) != "no such hook" || m.UserProperties["status"] != "404" || string(m.CorrelationData) != "c1" || m.ContentType != "text/plain" {
			t.Errorf("reply = %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no reply")
	}
	testwait.For(t, "failed", func() bool { s, _ := e.Stats("p"); return s.Failed == 1 })
	time.Sleep(50 * time.Millisecond)
	if calls != 1 {
		t.Errorf("%d calls, want 1", calls)
	}
}

func TestReplyOnSuccess(t *testing.T) {
	b := startBroker(t)
	rec := &recorder{resp: Response{Status: "2.05", ContentType: "application/json", Payload: []byte(`{"open":true}`)}}
	e := startEngine(t, Config{Broker: b, Routes: []Route{{Name: "r", Subscribe: mapping.MustParseTopicTemplate("r/{dev}"), Delivery: fastDelivery(), Deliverer: rec}}})
	replies := make(chan bridge.Message, 1)
	sub, err := b.Subscribe("re/#", bridge.SubOptions{QoS: 1, Queue: 4}, func(m bridge.Message) { replies <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	publish(t, b, bridge.Message{Topic: "r/v1", Payload: []byte("open"), QoS: 1, ResponseTopic: "re/v1", CorrelationData: []byte{9}})
	select {
	case m := <-replies:
		if string(m.Payload) != `{"open":true}` || m.UserProperties["status"] != "2.05" || string(m.CorrelationData) != "\x09" || m.ContentType != "application/json" {
			t.Errorf("reply = %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no reply")
	}
	testwait.For(t, "counted", func() bool { s, _ := e.Stats("r"); return s.Replies == 1 })
}

func TestRefuseNewCounts(t *testing.T) {
	b := startBroker(t)
	block := make(chan struct{})
	rec := &recorder{}
	d := fastDelivery()
	d.QueueMaxItems, d.Overflow, d.MaxInFlight = 3, mapping.OverflowRefuseNew, 1
	e := startEngine(t, Config{Broker: b, Routes: []Route{{Name: "f", Subscribe: mapping.MustParseTopicTemplate("f"), Delivery: d,
		Deliverer: DelivererFunc(func(ctx context.Context, d *Delivery) (Response, error) {
			select {
			case <-block:
			case <-ctx.Done():
				return Response{}, ctx.Err()
			}
			return rec.Deliver(ctx, d)
		})}}})
	for i := range 10 {
		publish(t, b, bridge.Message{Topic: "f", Payload: []byte(fmt.Sprint(i)), QoS: 1})
	}
	s, _ := e.Stats("f")
	if s.Refused != 7 || s.Depth != 3 {
		t.Errorf("stats = %+v", s)
	}
	close(block)
	testwait.For(t, "three delivered", func() bool { return len(rec.payloads()) == 3 })
	if got := rec.payloads(); !slices.Equal(got, []string{"0", "1", "2"}) {
		t.Errorf("got %v", got)
	}
}

func TestQueueSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	b := startBroker(t)
	sub := mapping.MustParseTopicTemplate("q/{n}")
	failing := DelivererFunc(func(context.Context, *Delivery) (Response, error) {
		return Response{}, errors.New("down")
	})
	d := fastDelivery()
	d.Ordered, d.MaxInFlight = true, 1
	e, err := New(Config{Broker: b, Dir: dir, Routes: []Route{{Name: "q", Subscribe: sub, Delivery: d, Deliverer: failing}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		publish(t, b, bridge.Message{Topic: "q/" + fmt.Sprint(i), Payload: []byte(fmt.Sprint(i)), QoS: 1})
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.Shutdown(context.Background()); err != nil { // idempotent
		t.Fatal(err)
	}
	rec := &recorder{}
	e2 := startEngine(t, Config{Broker: b, Dir: dir, Routes: []Route{{Name: "q", Subscribe: sub, Delivery: d, Deliverer: rec}}})
	testwait.For(t, "redelivery", func() bool { return len(rec.payloads()) == 20 })
	for i, dl := range rec.got {
		if n, _ := dl.Vars.Get("n"); n != fmt.Sprint(i) || string(dl.Message.Payload) != fmt.Sprint(i) {
			t.Errorf("%d: %+v", i, dl)
		}
	}
	s, _ := e2.Stats("q")
	if s.Depth != 0 {
		t.Errorf("depth %d", s.Depth)
	}
}

func TestExpiredMessagesAreDropped(t *testing.T) {
	b := startBroker(t)
	rec := &recorder{}
	e := startEngine(t, Config{Broker: b, Routes: []Route{{Name: "x", Subscribe: mapping.MustParseTopicTemplate("x"), Delivery: fastDelivery(), Deliverer: rec}}})
	r := e.routes[0]
	m := bridge.Message{Topic: "x", Payload: []byte("old"), Time: time.Now().Add(-time.Hour), Expiry: time.Minute}
	var vars mapping.Vars
	if err := r.q.Put(context.Background(), encodeRecord(&m, &vars)); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "expired", func() bool { s, _ := e.Stats("x"); return s.Expired == 1 })
	if len(rec.payloads()) != 0 {
		t.Error("expired message delivered")
	}
}

type flakySource struct {
	mu   sync.Mutex
	runs int
}

func (f *flakySource) Run(ctx context.Context, emit func(Sample)) error {
	f.mu.Lock()
	f.runs++
	n := f.runs
	f.mu.Unlock()
	if n < 3 {
		return errors.New("device unreachable")
	}
	emit(Sample{Payload: []byte(fmt.Sprintf("run %d", n)), ContentType: "text/plain"})
	<-ctx.Done()
	return ctx.Err()
}

func TestSourceRunsAgainAfterFailure(t *testing.T) {
	b := startBroker(t)
	got := make(chan bridge.Message, 4)
	sub, err := b.Subscribe("legacy/#", bridge.SubOptions{QoS: 1, Queue: 4}, func(m bridge.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	reg := prometheus.NewRegistry()
	e := startEngine(t, Config{Broker: b, Registry: reg, Sources: []SourceRoute{{
		Name: "legacy", Topic: "legacy/t", QoS: 1, Source: &flakySource{}, BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond,
	}}})
	select {
	case m := <-got:
		if string(m.Payload) != "run 3" || m.ContentType != "text/plain" {
			t.Errorf("got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing published")
	}
	testwait.For(t, "counted", func() bool { s, _ := e.SourceStats("legacy"); return s.Published == 1 })
	s, _ := e.SourceStats("legacy")
	if s.Failures != 2 || s.Published != 1 {
		t.Errorf("stats %+v", s)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	if !slices.Contains(names, "gateway_source_published_total") {
		t.Errorf("metrics: %v", names)
	}
}

func TestMetrics(t *testing.T) {
	b := startBroker(t)
	reg := prometheus.NewRegistry()
	rec := &recorder{}
	startEngine(t, Config{Broker: b, Registry: reg, Routes: []Route{{Name: "m", Subscribe: mapping.MustParseTopicTemplate("m"), Delivery: fastDelivery(), Deliverer: rec}}})
	publish(t, b, bridge.Message{Topic: "m", Payload: []byte("1"), QoS: 1})
	testwait.For(t, "delivery", func() bool { return len(rec.payloads()) == 1 })
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			lines = append(lines, fmt.Sprintf("%s{%s} %g", mf.GetName(), strings.Join(labels, ","), v))
		}
	}
	for _, want := range []string{
		"gateway_egress_delivered_total{route=m} 1",
		"gateway_egress_delivery_seconds{route=m} 1",
		"gateway_egress_queue_depth{route=m} 0",
		"gateway_egress_dropped_total{reason=refuse_new,route=m} 0",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("missing %s in\n%s", want, strings.Join(lines, "\n"))
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	m := bridge.Message{Topic: "a/b", Payload: []byte{0, 1, 2}, QoS: 1, Retain: true, ContentType: "x/y", ResponseTopic: "r",
		CorrelationData: []byte("c"), UserProperties: map[string]string{"a": "1", "b": ""}, Expiry: time.Minute, Time: time.Unix(5, 6)}
	vars := mapping.VarsOf("x", "1", "y", "a/b")
	got, gv, err := decodeRecord(encodeRecord(&m, &vars))
	if err != nil {
		t.Fatal(err)
	}
	if got.Topic != m.Topic || string(got.Payload) != string(m.Payload) || !got.Retain || got.QoS != 1 || got.ContentType != "x/y" ||
		got.ResponseTopic != "r" || string(got.CorrelationData) != "c" || len(got.UserProperties) != 2 || got.Expiry != time.Minute ||
		!got.Time.Equal(m.Time) || gv.Len() != 2 {
		t.Errorf("got %+v %v", got, gv.Map())
	}
	rec := encodeRecord(&m, &vars)
	for i := range rec {
		if _, _, err := decodeRecord(rec[:i]); err == nil {
			t.Fatalf("truncated at %d decoded", i)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	_, err := New(Config{Routes: []Route{{}, {Name: "a", Subscribe: mapping.MustParsePathTemplate("/a")}}, Sources: []SourceRoute{{}}})
	want := []string{
		"egress: Broker is required",
		"egress: routes[0]: Name is required",
		`egress: route "": Subscribe must be a topic template`,
		`egress: route "": Deliverer is required`,
		`egress: route "a": Subscribe must be a topic template`,
		`egress: route "a": Deliverer is required`,
		"egress: sources[0]: Name, Topic and Source are required",
	}
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Errorf("err = %v", err)
	}
}
