package coapadapter

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"os"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/pkg/runner/periodic"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"go.uber.org/goleak"

	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/internal/coaptest"
	"github.com/edgebridge/gateway/internal/mqtttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testEnv is a broker with an MQTT listener and the adapter on loopback.
type testEnv struct {
	b        *bridge.Broker
	s        *Server
	mqtt     string
	udp      string
	dtls     string
	tcp      string
	shutdown func()
}

// testLogger logs to the test output at debug level when COAP_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("COAP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// start runs a broker and the adapter with anonymous access; cfg.UDP
// defaults to 127.0.0.1:0.
func start(t testing.TB, cfg Config) *testEnv {
	t.Helper()
	cfg.AllowAnonymous = true
	return startStrict(t, cfg)
}

// startStrict is start without turning on anonymous access.
func startStrict(t testing.TB, cfg Config) *testEnv {
	t.Helper()
	b, err := bridge.New(bridge.Config{Listeners: []bridge.Listener{{Address: "127.0.0.1:0"}}, AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if cfg.UDP == "" {
		cfg.UDP = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	s, err := New(cfg, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e := &testEnv{b: b, s: s, mqtt: b.Addrs()[0].Address}
	e.udp, e.dtls, e.tcp = s.Addrs()
	done := false
	e.shutdown = func() {
		if done {
			return
		}
		done = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := b.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(e.shutdown)
	return e
}

// subscriber is an MQTT 5 client subscribed to filter.
func (e *testEnv) subscriber(t *testing.T, filter string) *mqtttest.Client {
	t.Helper()
	c := mqtttest.Dial(t, e.mqtt, mqtttest.Options{ClientID: "sub-" + t.Name()})
	c.Sub(filter, 2)
	return c
}

// ctx5 is a context for one client call.
func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// testRunner is a go-coap periodic runner whose goroutines end with the
// test (the default one sleeps 4 s between runs, which goleak sees).
func testRunner(t *testing.T) periodic.Func { return coaptest.Runner(t) }

// body reads a response body.
func body(t *testing.T, m *pool.Message) string {
	t.Helper()
	b, err := m.ReadBody()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// expectCode fails unless resp has code want; it returns the diagnostic.
func expectCode(t *testing.T, resp *pool.Message, want codes.Code) string {
	t.Helper()
	d := body(t, resp)
	if resp.Code() != want {
		t.Fatalf("code %v (%q), want %v", resp.Code(), d, want)
	}
	return d
}

// rawClient is a bare UDP socket speaking CoAP by hand, for what a library
// client will not do (duplicates, RST, silence).
type rawClient struct {
	t    testing.TB
	conn *net.UDPConn
	mid  uint16
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawClient{t: t, conn: c, mid: 1000}
}

// encode marshals m.
func encode(t testing.TB, m message.Message) []byte {
	t.Helper()
	n, err := coder.DefaultCoder.Size(m)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, n)
	if _, err := coder.DefaultCoder.Encode(m, buf); err != nil {
		t.Fatal(err)
	}
	return buf
}

// request builds a request message with path levels as Uri-Path options.
func (c *rawClient) request(typ message.Type, code codes.Code, token string, observe int, path ...string) message.Message {
	c.mid++
	m := message.Message{Type: typ, Code: code, MessageID: int32(c.mid), Token: []byte(token), Options: message.Options{}}
	buf := make([]byte, 256)
	if observe >= 0 {
		var n int
		m.Options, n, _ = m.Options.SetUint32(buf, message.Observe, uint32(observe))
		buf = buf[n:]
	}
	for _, p := range path {
		m.Options, _, _ = m.Options.AddString(buf, message.URIPath, p)
		buf = buf[len(p):]
	}
	return m
}

// send writes raw bytes.
func (c *rawClient) send(d []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(d); err != nil {
		c.t.Fatal(err)
	}
}

// recv reads one datagram, raw and decoded; ok is false on timeout.
func (c *rawClient) recv(timeout time.Duration) ([]byte, message.Message, bool) {
	c.t.Helper()
	buf := make([]byte, 2048)
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	n, err := c.conn.Read(buf)
	if err != nil {
		return nil, message.Message{}, false
	}
	m := message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(buf[:n], &m); err != nil {
		c.t.Fatalf("undecodable datagram %x: %v", buf[:n], err)
	}
	return bytes.Clone(buf[:n]), m, true
}

// ack acknowledges a CON with an empty ACK; rst rejects it.
func (c *rawClient) ack(m message.Message) {
	c.send(encode(c.t, message.Message{Type: message.Acknowledgement, Code: codes.Empty, MessageID: m.MessageID, Options: message.Options{}}))
}

func (c *rawClient) rst(m message.Message) {
	c.send(encode(c.t, message.Message{Type: message.Reset, Code: codes.Empty, MessageID: m.MessageID, Options: message.Options{}}))
}

// testPKI is a throw-away ECDSA CA with one server and one client
// certificate.
type testPKI struct {
	pool   *x509.CertPool
	server tls.Certificate
	client tls.Certificate
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(cn string, serial int64, usage x509.ExtKeyUsage) tls.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(der)
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{pool: pool, server: issue("gateway", 2, x509.ExtKeyUsageServerAuth), client: issue("device-7", 3, x509.ExtKeyUsageClientAuth)}
}
