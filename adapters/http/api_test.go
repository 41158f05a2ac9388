package httpadapter

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/edgebridge/gateway/internal/mqtttest"
	"github.com/edgebridge/gateway/internal/testwait"
)

// TestOpenAPICoversEveryRoute walks the chi router and fails when a route
// (method and path) is missing from openapi.json.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	b := startBroker(t, bridgeConfig())
	s, err := New(Config{Generic: true}, b)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	param := regexp.MustCompile(`\{([^}:]+)(:[^}]*)?\}`)
	n := 0
	err = chi.Walk(s.router.Load(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		path := param.ReplaceAllString(route, "{$1}")
		path = strings.Replace(path, "/*", "/{topic}", 1)
		ops, ok := doc.Paths[path]
		if !ok {
			t.Errorf("route %s %s: path %s missing from openapi.json", method, route, path)
			return nil
		}
		if _, ok := ops[strings.ToLower(method)]; !ok {
			t.Errorf("route %s %s: method missing from openapi.json", method, route)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 11 {
		t.Fatalf("walked only %d routes", n)
	}
	// Served as JSON.
	e := start(t, Config{})
	resp, body := e.do(t, "GET", "/openapi.json", "")
	wantStatus(t, resp, body, 200)
	if resp.Header.Get("Content-Type") != "application/json" || !json.Valid(body) {
		t.Fatal("openapi.json not served as JSON")
	}
}

func TestOperationalEndpoints(t *testing.T) {
	b := startBroker(t, bridgeConfig())
	s := startServer(t, b, Config{Routes: func() any { return []map[string]string{{"name": "r1"}} }})
	e := &env{b: b, s: s, url: "http://" + s.Addr(), c: newClient(t)}
	for path, want := range map[string]string{
		"/healthz": `{"status":"ok"}`,
		"/readyz":  `{"status":"ready"}`,
		"/routes":  `[{"name":"r1"}]`,
	} {
		resp, body := e.do(t, "GET", path, "")
		wantStatus(t, resp, body, 200)
		if strings.TrimSpace(string(body)) != want {
			t.Errorf("%s: %s", path, body)
		}
	}
	e2 := start(t, Config{})
	resp, body := e2.do(t, "GET", "/routes", "")
	if strings.TrimSpace(string(body)) != "[]" {
		t.Errorf("/routes without hook: %d %s", resp.StatusCode, body)
	}
	// Mounted routes and Remount.
	if err := s.Remount(func(r chi.Router) {
		r.Get("/extra", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("extra")) })
	}); err != nil {
		t.Fatal(err)
	}
	resp, body = e.do(t, "GET", "/extra", "")
	if string(body) != "extra" {
		t.Fatalf("mounted route: %d %s", resp.StatusCode, body)
	}
	if err := s.Remount(func(r chi.Router) { r.Get("/bad/{", nil) }); err == nil {
		t.Fatal("a bad pattern was accepted")
	}
	_, body = e.do(t, "GET", "/extra", "")
	if string(body) != "extra" {
		t.Fatal("a failed Remount replaced the router")
	}
}

func TestCORS(t *testing.T) {
	e := start(t, Config{CORSOrigins: []string{"https://app.example"}})
	req, _ := http.NewRequest("OPTIONS", e.url+"/topics/a", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "PUT")
	req.Header.Set("Access-Control-Request-Headers", "content-type, mqtt-user-property")
	resp, err := e.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "PUT") {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	resp, body := e.do(t, "POST", "/topics/a", "x", "Origin", "https://evil.example")
	wantStatus(t, resp, body, 204)
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS allowed a foreign origin")
	}
	resp, body = e.do(t, "POST", "/topics/a", "x", "Origin", "https://app.example")
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("CORS: %v %s", resp.Header, body)
	}
}

func TestHTTPS(t *testing.T) {
	// A write deadline shorter than the idle time between events must not
	// end an HTTP/2 stream.
	old := sseWriteWait
	sseWriteWait = 100 * time.Millisecond
	defer func() { sseWriteWait = old }()
	cert, pool := selfSigned(t)
	b := startBroker(t, bridgeConfig())
	s := startServer(t, b, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	e := &env{b: b, s: s, url: "https://" + s.Addr(), c: &http.Client{Transport: tr, Timeout: 5 * time.Second}}
	sub := mqtttest.Dial(t, b.Addrs()[0].Address, mqtttest.Options{ClientID: "sub"})
	sub.Sub("tls/#", 1)
	resp, body := e.do(t, "POST", "/topics/tls/x", "secure")
	wantStatus(t, resp, body, 204)
	if resp.ProtoMajor != 2 {
		t.Errorf("HTTPS served %s, want HTTP/2", resp.Proto)
	}
	if m := sub.Next(); string(m.Payload) != "secure" {
		t.Fatalf("got %q", m.Payload)
	}
	// SSE over HTTP/2 too.
	st := e.openSSE(t, context.Background(), "/topics/tls/%23")
	time.Sleep(400 * time.Millisecond) // idle for 4× the write deadline
	resp, body = e.do(t, "POST", "/topics/tls/y", "streamed")
	wantStatus(t, resp, body, 204)
	if env := envelopeOf(t, st.next()); env.Payload != "streamed" {
		t.Fatalf("h2 stream: %+v", env)
	}
}

// selfSigned makes an ECDSA certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "gateway test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// TestCurlInterop publishes with the real curl binary while an MQTT 5
// subscriber listens, and reads the retained message and an SSE stream back
// with curl. It skips without curl, except under CI=true where it fails.
func TestCurlInterop(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("curl is required in CI")
		}
		t.Skip("curl not installed")
	}
	e := start(t, Config{})
	sub := mqtttest.Dial(t, e.mqtt, mqtttest.Options{ClientID: "sub"})
	sub.Sub("curl/#", 2)
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, curl, append([]string{"-sS"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	code := run("-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "--data-binary", "22.5",
		"-H", "Content-Type: text/plain", "-H", "MQTT-User-Property: unit=C",
		e.url+"/topics/curl/room%201/t?qos=2")
	if code != "204" {
		t.Fatalf("curl PUT: %s", code)
	}
	m := sub.Next()
	if m.Topic != "curl/room 1/t" || string(m.Payload) != "22.5" || m.QoS != 2 || m.Properties.ContentType != "text/plain" || m.Properties.User.Get("unit") != "C" {
		t.Fatalf("curl publish: %s %q qos %d %+v", m.Topic, m.Payload, m.QoS, m.Properties)
	}
	if got := run(e.url + "/topics/curl/room%201/t"); got != "22.5" {
		t.Fatalf("curl GET: %q", got)
	}
	// SSE: curl -N reads the retained message, then stops after 1s.
	out, _ := exec.Command(curl, "-sN", "--max-time", "1", "-H", "Accept: text/event-stream", e.url+"/topics/curl/%23").Output()
	if !strings.Contains(string(out), `"topic":"curl/room 1/t"`) || !strings.Contains(string(out), "id: 1\n") {
		t.Fatalf("curl SSE: %q", out)
	}
	out2 := run("-w", "\n%{http_code}", "-X", "POST", "-H", "Content-Type: application/json",
		"--data-binary", `[{"topic":"curl/b","payload":"1"},{"topic":"curl/+","payload":"2"}]`, e.url+"/publish")
	if !strings.HasSuffix(out2, "\n200") || !strings.Contains(out2, `"status":400`) {
		t.Fatalf("curl batch: %s", out2)
	}
	if m := sub.Next(); m.Topic != "curl/b" {
		t.Fatalf("curl batch delivered %s", m.Topic)
	}

	testwait.For(t, "curl stream closed", func() bool { return e.s.sseOpen.Load() == 0 })

	// mosquitto_sub as the MQTT side, when installed (required under CI).
	msub, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("mosquitto_sub is required in CI")
		}
		t.Log("mosquitto_sub not installed: skipping that half")
		return
	}
	host, port, _ := net.SplitHostPort(e.mqtt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, msub, "-h", host, "-p", port, "-V", "5", "-t", "curl/m", "-C", "1",
		"-F", "%t|%p|%C|%P")
	subOut := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = subOut, subOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// mosquitto_sub gives no sign that it has subscribed: publish until it
	// prints the message and exits (-C 1).
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		code := run("-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "--data-binary", "hello",
			"-H", "Content-Type: text/plain", "-H", "MQTT-User-Property: k=v", e.url+"/topics/curl/m?qos=1")
		if code != "204" {
			t.Fatalf("curl POST: %s", code)
		}
		select {
		case err := <-done:
			if err != nil || strings.TrimSpace(subOut.String()) != "curl/m|hello|text/plain|k:v" {
				t.Fatalf("mosquitto_sub: %v %q", err, subOut.String())
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
