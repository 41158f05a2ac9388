package coapadapter

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/goccy/go-yaml"
	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/bridge/egress"
	"github.com/edgebridge/gateway/internal/mqtttest"
	"github.com/edgebridge/gateway/internal/testwait"
	"github.com/edgebridge/gateway/mapping"
)

type egressEnv struct {
	b    *bridge.Broker
	e    *egress.Engine
	mqtt string
}

func egressStart(t *testing.T, routes string) *egressEnv {
	t.Helper()
	b, err := bridge.New(bridge.Config{Listeners: []bridge.Listener{{Address: "127.0.0.1:0"}}, AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Shutdown(context.Background()) })
	var specs []mapping.RouteSpec
	if err := yaml.UnmarshalWithOptions([]byte(routes), &specs, yaml.Strict()); err != nil {
		t.Fatal(err)
	}
	tab, err := mapping.CompileEnv(specs, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg := egress.Config{Broker: b}
	for _, r := range tab.Routes() {
		switch {
		case r.CoAPOut != nil:
			d, err := EgressDevice(r, EgressOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cfg.Routes = append(cfg.Routes, egress.Route{Name: r.Name, Subscribe: r.Subscribe, Delivery: r.Delivery, Deliverer: d})
		case r.Source != nil:
			s, err := SourceObserve(r, EgressOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cfg.Sources = append(cfg.Sources, egress.SourceRoute{Name: r.Name, Topic: r.Topic.String(), QoS: r.QoS, Source: s,
				BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
		}
	}
	e, err := egress.New(cfg)
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
	return &egressEnv{b: b, e: e, mqtt: b.Addrs()[0].Address}
}

type deviceReq struct {
	code    codes.Code
	path    string
	queries []string
	typ     message.Type
	cf      int // -1: none
	payload []byte
}

// device is a go-coap server standing in for a CoAP device.
type device struct {
	addr   string
	stop   func()
	mu     sync.Mutex
	reqs   []deviceReq
	answer func(n int, r deviceReq) (codes.Code, int, []byte)
}

// startDevice serves on addr ("127.0.0.1:0" for any port); with psk the
// device speaks DTLS.
func startDevice(t *testing.T, addr string, psk []byte, h mux.HandlerFunc) (string, func()) {
	t.Helper()
	var wg sync.WaitGroup
	var stop func()
	if psk != nil {
		l, err := coapnet.NewDTLSListener("udp", addr, coapnet.NewDTLSServerOptions(
			piondtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }),
			piondtls.WithCipherSuites(pskSuites...),
		))
		if err != nil {
			t.Fatal(err)
		}
		s := coapdtls.NewServer(options.WithMux(h), options.WithPeriodicRunner(testRunner(t)), options.WithErrors(func(error) {}))
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.Serve(l) }()
		addr = l.Addr().String()
		stop = func() { s.Stop(); _ = l.Close(); wg.Wait() }
	} else {
		l, err := coapnet.NewListenUDP("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		s := udp.NewServer(options.WithMux(h), options.WithPeriodicRunner(testRunner(t)), options.WithErrors(func(error) {}))
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.Serve(l) }()
		addr = l.LocalAddr().String()
		stop = func() { s.Stop(); _ = l.Close(); wg.Wait() }
	}
	var once sync.Once
	st := func() { once.Do(stop) }
	t.Cleanup(st)
	return addr, st
}

func newDevice(t *testing.T, psk []byte, answer func(n int, r deviceReq) (codes.Code, int, []byte)) *device {
	d := &device{answer: answer}
	d.addr, d.stop = startDevice(t, "127.0.0.1:0", psk, func(w mux.ResponseWriter, r *mux.Message) {
		rq := deviceReq{code: r.Code(), typ: r.Type(), cf: -1}
		rq.path, _ = r.Options().Path()
		rq.queries, _ = r.Options().Queries()
		if cf, err := r.ContentFormat(); err == nil {
			rq.cf = int(cf)
		}
		if r.Body() != nil {
			rq.payload, _ = io.ReadAll(r.Body())
		}
		d.mu.Lock()
		d.reqs = append(d.reqs, rq)
		n := len(d.reqs)
		d.mu.Unlock()
		code, cf, body := codes.Changed, -1, []byte(nil)
		if d.answer != nil {
			code, cf, body = d.answer(n, rq)
		}
		if cf >= 0 {
			_ = w.SetResponse(code, message.MediaType(cf), bytes.NewReader(body))
		} else {
			_ = w.SetResponse(code, message.TextPlain, nil)
		}
	})
	return d
}

func (d *device) got() []deviceReq {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]deviceReq(nil), d.reqs...)
}

func TestEgressCoAPPutWithCapturedVariables(t *testing.T) {
	d := newDevice(t, nil, nil)
	env := egressStart(t, fmt.Sprintf(`[{name: valve, subscribe: "act/{dev}/set",
		coap_out: {url: "coap://%s/valves/{dev}?mode=fast", method: PUT}},
		{name: lamp, subscribe: "lamp/{dev}", coap_out: {url: "coap://%s/l/{dev}", confirmable: false}}]`, d.addr, d.addr))
	if err := env.b.Publish(context.Background(), bridge.Message{Topic: "act/v7/set", Payload: []byte(`{"open":true}`), QoS: 1, ContentType: "application/json"}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "request", func() bool { return len(d.got()) == 1 })
	r := d.got()[0]
	if r.code != codes.PUT || r.path != "/valves/v7" || strings.Join(r.queries, "&") != "mode=fast" || r.typ != message.Confirmable ||
		r.cf != int(message.AppJSON) || string(r.payload) != `{"open":true}` {
		t.Errorf("request = %+v", r)
	}
	if err := env.b.Publish(context.Background(), bridge.Message{Topic: "lamp/l1", Payload: []byte("on"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "NON request", func() bool { return len(d.got()) == 2 })
	if r := d.got()[1]; r.code != codes.POST || r.typ != message.NonConfirmable || r.path != "/l/l1" || r.cf != -1 {
		t.Errorf("request = %+v", r)
	}
	testwait.For(t, "delivered", func() bool { s, _ := env.e.Stats("lamp"); return s.Delivered == 1 })
}

func TestEgressCoAPBlockwise(t *testing.T) {
	d := newDevice(t, nil, nil)
	env := egressStart(t, fmt.Sprintf(`[{name: fw, subscribe: "fw/{dev}", coap_out: {url: "coap://%s/fw"}}]`, d.addr))
	big := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16 KB: many blocks
	if err := env.b.Publish(context.Background(), bridge.Message{Topic: "fw/a", Payload: big, QoS: 1}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "delivered", func() bool { s, _ := env.e.Stats("fw"); return s.Delivered == 1 })
	reqs := d.got()
	if last := reqs[len(reqs)-1]; !bytes.Equal(last.payload, big) {
		t.Errorf("payload %d bytes, want %d", len(last.payload), len(big))
	}
}

func TestEgressCoAPErrorClasses(t *testing.T) {
	d := newDevice(t, nil, func(n int, r deviceReq) (codes.Code, int, []byte) {
		switch {
		case r.path == "/missing":
			return codes.NotFound, int(message.TextPlain), []byte("no such thing")
		case n <= 2:
			return codes.ServiceUnavailable, -1, nil
		}
		return codes.Changed, -1, nil
	})
	env := egressStart(t, fmt.Sprintf(`[{name: c, subscribe: "c/{p}", coap_out: {url: "coap://%s/{p}", retry: {backoff: 5ms..10ms}}}]`, d.addr))
	_ = env.b.Publish(context.Background(), bridge.Message{Topic: "c/flaky", Payload: []byte("x"), QoS: 1})
	testwait.For(t, "delivered after 5.03s", func() bool { s, _ := env.e.Stats("c"); return s.Delivered == 1 })
	_ = env.b.Publish(context.Background(), bridge.Message{Topic: "c/missing", Payload: []byte("x"), QoS: 1})
	testwait.For(t, "failed", func() bool { s, _ := env.e.Stats("c"); return s.Failed == 1 })
	time.Sleep(100 * time.Millisecond)
	if n := len(d.got()); n != 4 {
		t.Errorf("%d requests, want 4 (two 5.03, one 2.04, one 4.04)", n)
	}
	if s, _ := env.e.Stats("c"); s.Retried != 2 {
		t.Errorf("stats %+v", s)
	}
}

// TestEgressCoAPReverseRequestResponse: an MQTT 5 client reads a CoAP
// device through the gateway.
func TestEgressCoAPReverseRequestResponse(t *testing.T) {
	d := newDevice(t, nil, func(int, deviceReq) (codes.Code, int, []byte) {
		return codes.Content, int(message.AppJSON), []byte(`{"t":21.5}`)
	})
	env := egressStart(t, fmt.Sprintf(`[{name: read, subscribe: "read/{dev}", coap_out: {url: "coap://%s/{dev}/temp", method: GET}}]`, d.addr))
	c := mqtttest.Dial(t, env.mqtt, mqtttest.Options{ClientID: "app"})
	c.Sub("app/answers", 1)
	c.Pub(&paho.Publish{Topic: "read/d1", QoS: 1, Properties: &paho.PublishProperties{ResponseTopic: "app/answers", CorrelationData: []byte("q1")}})
	m := c.Next()
	if string(m.Payload) != `{"t":21.5}` || m.Properties.User.Get("status") != "2.05" || string(m.Properties.CorrelationData) != "q1" ||
		m.Properties.ContentType != "application/json" {
		t.Errorf("reply %q status %q corr %q ct %q", m.Payload, m.Properties.User.Get("status"), m.Properties.CorrelationData, m.Properties.ContentType)
	}
	if r := d.got()[0]; r.code != codes.GET || r.path != "/d1/temp" {
		t.Errorf("request %+v", r)
	}
}

func TestEgressCoAPOverDTLSWithPSK(t *testing.T) {
	key := []byte("0123456789abcdef")
	d := newDevice(t, key, nil)
	env := egressStart(t, fmt.Sprintf(`[{name: sec, subscribe: "sec/{dev}",
		coap_out: {url: "coaps://%s/x/{dev}", method: PUT, psk: {identity: gw, key_hex: "%x"}}}]`, d.addr, key))
	for i := range 3 {
		_ = env.b.Publish(context.Background(), bridge.Message{Topic: "sec/a", Payload: []byte(fmt.Sprint(i)), QoS: 1})
	}
	testwait.For(t, "delivered over DTLS", func() bool { s, _ := env.e.Stats("sec"); return s.Delivered == 3 })
	if r := d.got()[0]; r.path != "/x/a" || r.code != codes.PUT {
		t.Errorf("request %+v", r)
	}
}

// observable is a device resource that notifies every 50 ms with Max-Age 1.
type observable struct {
	prefix string
	mu     sync.Mutex
	subs   []func(seq uint32) error
	quit   chan struct{}
	wg     sync.WaitGroup
}

func startObservable(t *testing.T, addr, prefix string) (string, func()) {
	o := &observable{prefix: prefix, quit: make(chan struct{})}
	addr, stopSrv := startDevice(t, addr, nil, func(w mux.ResponseWriter, r *mux.Message) {
		obs, err := r.Options().Observe()
		if r.Code() != codes.GET || err != nil || obs != 0 {
			_ = w.SetResponse(codes.Content, message.TextPlain, strings.NewReader(prefix))
			return
		}
		cc, token := w.Conn(), append([]byte(nil), r.Token()...)
		send := func(seq uint32) error {
			m := cc.AcquireMessage(cc.Context())
			defer cc.ReleaseMessage(m)
			m.SetCode(codes.Content)
			m.SetToken(token)
			m.SetContentFormat(message.TextPlain)
			m.SetObserve(seq)
			m.SetOptionUint32(message.MaxAge, 1)
			m.SetBody(strings.NewReader(fmt.Sprintf("%s-%d", prefix, seq)))
			return cc.WriteMessage(m)
		}
		o.mu.Lock()
		o.subs = append(o.subs, send)
		o.mu.Unlock()
		_ = w.SetResponse(codes.Content, message.TextPlain, strings.NewReader(prefix+"-first"))
		w.Message().SetObserve(1)
	})
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for seq := uint32(2); ; seq++ {
			select {
			case <-o.quit:
				return
			case <-tk.C:
			}
			o.mu.Lock()
			subs := append([]func(uint32) error(nil), o.subs...)
			o.mu.Unlock()
			for _, s := range subs {
				_ = s(seq)
			}
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			close(o.quit)
			o.wg.Wait()
			stopSrv()
		})
	}
	t.Cleanup(stop)
	return addr, stop
}

// TestEgressObserveSourceDeviceRestarts: the device goes away and comes back
// on the same address without its observers; the gateway finds out when the
// last notification's Max-Age has passed, registers again and publishes the
// new device's notifications.
func TestEgressObserveSourceDeviceRestarts(t *testing.T) {
	addr, stop := startObservable(t, "127.0.0.1:0", "a")
	env := egressStart(t, fmt.Sprintf(`[{name: legacy, source: {coap_observe: "coap://%s/temp"}, topic: legacy/temp, qos: 1}]`, addr))
	c := mqtttest.Dial(t, env.mqtt, mqtttest.Options{ClientID: "w"})
	c.Sub("legacy/temp", 1)
	seen := map[string]bool{}
	for len(seen) < 3 {
		m := c.Next()
		if !strings.HasPrefix(string(m.Payload), "a-") || m.Properties.ContentType != "text/plain" {
			t.Fatalf("got %q %q", m.Payload, m.Properties.ContentType)
		}
		seen[string(m.Payload)] = true
	}
	stop()
	time.Sleep(300 * time.Millisecond)
	if _, stop2 := startObservable(t, addr, "b"); stop2 == nil {
		t.Fatal("no restart")
	}
	deadline := time.After(15 * time.Second)
	for {
		select {
		case m := <-c.Msgs:
			if strings.HasPrefix(string(m.Payload), "b-") {
				s, _ := env.e.SourceStats("legacy")
				if s.Failures == 0 {
					t.Errorf("stats %+v", s)
				}
				return
			}
		case <-deadline:
			t.Fatal("observation did not resume on the restarted device")
		}
	}
}
