package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/fxamacker/cbor/v2"
	coapmsg "github.com/plgd-dev/go-coap/v3/message"
	coapcodes "github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/edgebridge/gateway/internal/coaptest"
	"github.com/edgebridge/gateway/internal/mqtttest"
)

const routesYAML = `routes:
  - name: temperature
    http: {path: "/sensors/{id}/temperature"}
    topic: sensors/{id}/temperature
    qos: 1
    retain: true
    content_type: application/json
  - name: cbor-in
    http: {path: "/cbor/{id}", methods: [POST]}
    topic: cbor/{id}
    transform: cbor-to-json
  - name: command
    http: {path: "/devices/{id}/commands/{cmd}", methods: [POST]}
    topic: devices/{id}/commands/{cmd}
    reply: {timeout: 2s}
  - name: legacy-command
    http: {path: "/legacy/{id}/{cmd}", methods: [POST]}
    topic: legacy/{id}/{cmd}
    reply: {topic: "legacy/{id}/replies/{cmd}", timeout: 2s}
`

func httpDo(t *testing.T, method, url, ctype string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestHTTPRoutesIngress(t *testing.T) {
	r := startGateway(t, "-c", writeConfig(t, routesYAML))
	base := "http://" + r.g.http.Addr()
	sub := mqtttest.Dial(t, r.mqttAddr(t, "tcp"), mqtttest.Options{ClientID: "routes-sub"})
	sub.Sub("sensors/#", 1)
	sub.Sub("cbor/#", 1)

	resp, body := httpDo(t, "PUT", base+"/sensors/a7/temperature", "", []byte(`{"c":21.5}`))
	if resp.StatusCode != 204 {
		t.Fatalf("PUT: %d %s", resp.StatusCode, body)
	}
	m := sub.Next()
	if m.Topic != "sensors/a7/temperature" || m.QoS != 1 || m.Properties.ContentType != "application/json" {
		t.Fatalf("published %s qos %d ct %q", m.Topic, m.QoS, m.Properties.ContentType)
	}
	resp, body = httpDo(t, "GET", base+"/sensors/a7/temperature", "", nil)
	if resp.StatusCode != 200 || string(body) != `{"c":21.5}` || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET: %d %q %s", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
	// The route fixes qos and retain.
	resp, body = httpDo(t, "POST", base+"/sensors/a7/temperature?qos=0", "", []byte("1"))
	if resp.StatusCode != 400 || !strings.Contains(string(body), "fixed qos") {
		t.Fatalf("qos override: %d %s", resp.StatusCode, body)
	}

	// cbor-to-json: CBOR in, JSON on MQTT; broken CBOR is a 400 and nothing is published.
	in, _ := cbor.Marshal(map[string]any{"t": 20, "ok": true})
	resp, body = httpDo(t, "POST", base+"/cbor/9", "application/cbor", in)
	if resp.StatusCode != 204 {
		t.Fatalf("cbor POST: %d %s", resp.StatusCode, body)
	}
	m = sub.Next()
	var got map[string]any
	if m.Topic != "cbor/9" || json.Unmarshal(m.Payload, &got) != nil || got["t"] != float64(20) || m.Properties.ContentType != "application/json" {
		t.Fatalf("transformed: %s %q ct %q", m.Topic, m.Payload, m.Properties.ContentType)
	}
	resp, body = httpDo(t, "POST", base+"/cbor/9", "application/cbor", []byte{0xff, 0x00})
	if resp.StatusCode != 400 || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("bad cbor: %d %s", resp.StatusCode, body)
	}
	sub.None(150 * time.Millisecond)

	// The broker's counters are on /metrics beside the adapters'.
	_, body = httpDo(t, "GET", base+"/metrics", "", nil)
	for _, name := range []string{"gateway_broker_retained_messages ", "gateway_broker_inflight_dropped_total", "gateway_broker_late_replies_total"} {
		if !strings.Contains(string(body), name) {
			t.Errorf("/metrics lacks %q:\n%s", name, body)
		}
	}
	// GET /routes lists the mapping.
	resp, body = httpDo(t, "GET", base+"/routes", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"name":"temperature"`) {
		t.Fatalf("/routes: %d %s", resp.StatusCode, body)
	}
}

// responder answers requests on filter: "re:"+payload as text/plain, with
// the user property status=201.
func responder(t *testing.T, addr, filter string) {
	t.Helper()
	mqtttest.Responder(t, addr, "responder", filter, func(req *paho.Publish) *paho.Publish {
		return &paho.Publish{Payload: append([]byte("re:"), req.Payload...),
			Properties: &paho.PublishProperties{ContentType: "text/plain", User: paho.UserProperties{{Key: "status", Value: "201"}}}}
	})
}

func TestHTTPRequestResponse(t *testing.T) {
	r := startGateway(t, "-c", writeConfig(t, routesYAML))
	base := "http://" + r.g.http.Addr()
	addr := r.mqttAddr(t, "tcp")
	responder(t, addr, "devices/+/commands/+")

	resp, body := httpDo(t, "POST", base+"/devices/d1/commands/reboot", "text/plain", []byte("now"))
	if resp.StatusCode != 201 || string(body) != "re:now" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("request: %d %q %s", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}

	// 100 concurrent requests, each gets its own answer.
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprint("n", i)
			req, _ := http.NewRequest("POST", fmt.Sprintf("%s/devices/d%d/commands/c", base, i), strings.NewReader(want))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if string(b) != "re:"+want {
				t.Errorf("request %d got %d %q", i, resp.StatusCode, b)
			}
		}()
	}
	wg.Wait()

	// An MQTT 3.1.1 device answering on the route's reply topic template.
	dev := mqtttest.Dial3(t, addr, "legacy-dev", false)
	dev.Sub("legacy/+/+", 1)
	go func() {
		select {
		case m := <-dev.Msgs:
			parts := strings.Split(m.Topic(), "/")
			dev.Publish("legacy/"+parts[1]+"/replies/"+parts[2], 1, false, []byte("ok:"+string(m.Payload()))).WaitTimeout(5 * time.Second)
		case <-time.After(5 * time.Second):
		}
	}()
	resp, body = httpDo(t, "POST", base+"/legacy/v2/open", "", []byte("50%"))
	if resp.StatusCode != 200 || string(body) != "ok:50%" {
		t.Fatalf("legacy request: %d %q", resp.StatusCode, body)
	}

	// Nobody answers: 504 after the route's timeout.
	start := time.Now()
	resp, body = httpDo(t, "POST", base+"/legacy/nobody/open", "", nil)
	if resp.StatusCode != 504 || !strings.Contains(string(body), "no reply") || time.Since(start) < 2*time.Second {
		t.Fatalf("timeout: %d %s after %v", resp.StatusCode, body, time.Since(start))
	}
}

func TestReloadSwapsHTTPRoutesAndEndsRemovedStreams(t *testing.T) {
	base1 := routesYAML + `  - name: gone
    http: {path: "/gone/{x}"}
    topic: gone/{x}
`
	file := writeConfig(t, base1)
	r := startGateway(t, "-c", file)
	base := "http://" + r.g.http.Addr()

	// A stream on a route that the reload removes, and one on a route it keeps.
	open := func(path string) *bufio.Reader {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("stream %s: %v %v", path, err, resp)
		}
		t.Cleanup(func() { _ = resp.Body.Close() })
		return bufio.NewReader(resp.Body)
	}
	removed := open("/gone/1")
	kept := open("/sensors/k/temperature")

	writeConfig2 := routesYAML + `  - name: added
    http: {path: "/added/{x}"}
    topic: added/{x}
`
	writeFile(t, file, writeConfig2)
	r.hup <- syscall.SIGHUP
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, _ := httpDo(t, "PUT", base+"/added/1", "", []byte("v"))
		if resp.StatusCode == 204 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("added route not served after reload: %d\n%s", resp.StatusCode, r.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp, _ := httpDo(t, "POST", base+"/gone/1", "", nil); resp.StatusCode != 404 {
		t.Fatalf("removed route answers %d", resp.StatusCode)
	}
	// The removed route's stream ends; the kept one still delivers.
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, removed)
		done <- err
	}()
	select {
	case err := <-done:
		t.Logf("removed route's stream ended (%v)", err)
	case <-time.After(5 * time.Second):
		t.Fatal("stream of a removed route still open after reload")
	}
	if resp, body := httpDo(t, "PUT", base+"/sensors/k/temperature", "", []byte(`1`)); resp.StatusCode != 204 {
		t.Fatalf("kept route: %d %s", resp.StatusCode, body)
	}
	for {
		line, err := kept.ReadString('\n')
		if err != nil {
			t.Fatalf("kept stream ended: %v", err)
		}
		if strings.HasPrefix(line, "data:") && strings.Contains(line, `"topic":"sensors/k/temperature"`) {
			break
		}
	}
}

func TestCoAPRoutes(t *testing.T) {
	file := writeConfig(t, `routes:
  - name: temperature
    coap: {path: "/s/{id}/t"}
    topic: sensors/{id}/temperature
    retain: true
    content_type: application/json
  - name: cbor-in
    coap: {path: "/c/{id}", methods: [POST]}
    topic: cbor/{id}
    transform: cbor-to-json
  - name: command
    coap: {path: "/d/{id}/{cmd}"}
    topic: devices/{id}/commands/{cmd}
    reply: {timeout: 1s}
`)
	r := startGateway(t, "-c", file)
	udpAddr, _, _ := r.g.coap.Addrs()
	cc := coaptest.DialUDP(t, udpAddr)
	addr := r.mqttAddr(t, "tcp")
	sub := mqtttest.Dial(t, addr, mqtttest.Options{ClientID: "coap-routes"})
	sub.Sub("sensors/#", 1)
	sub.Sub("cbor/#", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	resp, err := cc.Put(ctx, "/s/9/t", coapmsg.AppJSON, bytes.NewReader([]byte(`{"c":1}`)))
	if err != nil || resp.Code() != coapcodes.Changed {
		t.Fatalf("PUT: %v %v", err, resp)
	}
	if m := sub.Next(); m.Topic != "sensors/9/temperature" || string(m.Payload) != `{"c":1}` || m.QoS != 1 {
		t.Fatalf("published %s %q qos %d", m.Topic, m.Payload, m.QoS)
	}
	resp, err = cc.Get(ctx, "/s/9/t")
	if err != nil || resp.Code() != coapcodes.Content {
		t.Fatalf("GET: %v %v", err, resp)
	}
	if body, _ := resp.ReadBody(); string(body) != `{"c":1}` {
		t.Fatalf("GET body %q", body)
	}
	// The route fixes qos and retain.
	resp, err = cc.Post(ctx, "/s/9/t", coapmsg.TextPlain, bytes.NewReader([]byte("1")), coapmsg.Option{ID: coapmsg.URIQuery, Value: []byte("qos=0")})
	if err != nil || resp.Code() != coapcodes.BadRequest {
		t.Fatalf("query override: %v %v", err, resp)
	}
	// cbor-to-json; broken CBOR is 4.00 and nothing is published.
	in, _ := cbor.Marshal(map[string]any{"v": 3})
	resp, err = cc.Post(ctx, "/c/1", coapmsg.AppCBOR, bytes.NewReader(in))
	if err != nil || resp.Code() != coapcodes.Changed {
		t.Fatalf("cbor POST: %v %v", err, resp)
	}
	if m := sub.Next(); m.Topic != "cbor/1" || string(m.Payload) != `{"v":3}` || m.Properties.ContentType != "application/json" {
		t.Fatalf("transformed %s %q %q", m.Topic, m.Payload, m.Properties.ContentType)
	}
	resp, err = cc.Post(ctx, "/c/1", coapmsg.AppCBOR, bytes.NewReader([]byte{0xff}))
	if err != nil || resp.Code() != coapcodes.BadRequest {
		t.Fatalf("bad cbor: %v %v", err, resp)
	}
	resp, err = cc.Get(ctx, "/c/1")
	if err != nil || resp.Code() != coapcodes.MethodNotAllowed {
		t.Fatalf("GET on a POST-only route: %v %v", err, resp)
	}

	// Request/response over CoAP, and 5.04 without a responder.
	responder(t, addr, "devices/+/commands/+")
	resp, err = cc.Post(ctx, "/d/x/ping", coapmsg.TextPlain, bytes.NewReader([]byte("hi")))
	if err != nil || resp.Code() != coapcodes.Content {
		t.Fatalf("request: %v %v", err, resp)
	}
	if body, _ := resp.ReadBody(); string(body) != "re:hi" {
		t.Fatalf("reply %q", body)
	}

	// Discovery lists the routes.
	resp, err = cc.Get(ctx, "/.well-known/core")
	if err != nil {
		t.Fatal(err)
	}
	links, _ := resp.ReadBody()
	if !strings.Contains(string(links), `</s/{id}/t>;rt="temperature";ct=50;obs`) || !strings.Contains(string(links), `</d/{id}/{cmd}>;rt="command"`) {
		t.Fatalf("links %s", links)
	}
}

// Reloading under load: an HTTP client publishes on a route the reloads
// keep while SIGHUP swaps the table again and again; every accepted
// publish reaches the MQTT subscriber, whose connection never drops.
func TestReloadUnderLoadLosesNothing(t *testing.T) {
	file := writeConfig(t, routesYAML)
	r := startGateway(t, "-c", file)
	base := "http://" + r.g.http.Addr()
	sub := mqtttest.Dial(t, r.mqttAddr(t, "tcp"), mqtttest.Options{ClientID: "reload-sub"})
	sub.Sub("sensors/+/temperature", 1)

	// Collect concurrently: the test client's buffer is bounded.
	var mu sync.Mutex
	got := map[string]bool{}
	collectDone := make(chan struct{})
	stopCollect := make(chan struct{})
	go func() {
		defer close(collectDone)
		for {
			select {
			case m := <-sub.Msgs:
				mu.Lock()
				got[string(m.Payload)] = true
				mu.Unlock()
			case <-stopCollect:
				return
			}
		}
	}()
	stop := make(chan struct{})
	sent := make(chan int, 1)
	go func() {
		n := 0
		defer func() { sent <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			req, _ := http.NewRequest("POST", fmt.Sprintf("%s/sensors/s%d/temperature", base, n), strings.NewReader(fmt.Sprint(n)))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("POST %d: %v", n, err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != 204 {
				t.Errorf("POST %d: %d", n, resp.StatusCode)
				return
			}
			n++
		}
	}()
	for i := range 10 {
		extra := fmt.Sprintf("  - name: extra%d\n    http: {path: \"/extra%d/{x}\"}\n    topic: extra/%d/{x}\n", i, i, i)
		writeFile(t, file, routesYAML+extra)
		r.hup <- syscall.SIGHUP
		time.Sleep(30 * time.Millisecond)
	}
	close(stop)
	n := <-sent
	if n == 0 {
		t.Fatal("no publish went through")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		k := len(got)
		mu.Unlock()
		if k >= n {
			break
		}
		if time.Now().After(deadline) {
			close(stopCollect)
			<-collectDone
			t.Fatalf("received %d of %d publishes accepted during reloads", k, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stopCollect)
	<-collectDone
	if strings.Count(r.log.String(), "config reloaded") < 10 {
		t.Fatalf("not every reload was applied:\n%s", r.log)
	}
	select {
	case <-sub.Done():
		t.Fatal("the MQTT subscriber was disconnected by a reload")
	default:
	}
	t.Logf("%d publishes across 10 reloads, all delivered", n)
}
