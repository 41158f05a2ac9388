package coapadapter

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/tcp"
	tcpClient "github.com/plgd-dev/go-coap/v3/tcp/client"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/edgebridge/gateway/internal/coaptest"
)

// identities records who Authorize saw.
type identities struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (ids *identities) authorize(identity, _, _ string) bool {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	ids.seen[identity] = true
	return true
}

func (ids *identities) saw(id string) bool {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	return ids.seen[id]
}

func dialDTLS(t *testing.T, addr string, opts ...piondtls.ClientOption) *udpClient.Conn {
	t.Helper()
	cc, err := coapdtls.Dial(addr, coapdtls.NewDTLSClientOptions(opts...), options.WithErrors(func(error) {}), options.WithPeriodicRunner(testRunner(t)))
	return coaptest.Keep(t, cc, err)
}

func TestDTLSWithPSK(t *testing.T) {
	ids := &identities{seen: map[string]bool{}}
	e := startStrict(t, Config{
		UDP:       "",
		DTLS:      &DTLSConfig{Address: "127.0.0.1:0", PSK: map[string][]byte{"sensor-17": []byte("secret-key-17")}},
		Authorize: ids.authorize,
	})
	if e.dtls == "" {
		t.Fatal("dtls not bound")
	}
	cc := dialDTLS(t, e.dtls,
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte("secret-key-17"), nil }),
		piondtls.WithPSKIdentityHint([]byte("sensor-17")),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	)
	sub := e.subscriber(t, "sensors/#")
	resp, err := cc.Post(ctx5(t), "/ps/sensors/17/t", message.TextPlain, bytes.NewReader([]byte("21")))
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, resp, codes.Changed)
	if m := sub.Next(); string(m.Payload) != "21" || m.QoS != 1 {
		t.Fatalf("MQTT got %q qos %d", m.Payload, m.QoS)
	}
	if !ids.saw("sensor-17") {
		t.Fatal("PSK identity not passed to Authorize")
	}
	testObserve(t, e, cc)

	// A wrong key gets no session.
	raddr, _ := net.ResolveUDPAddr("udp", e.dtls)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	bad, err := piondtls.ClientWithOptions(pc, raddr,
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte("wrong"), nil }),
		piondtls.WithPSKIdentityHint([]byte("sensor-17")),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bad.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := bad.HandshakeContext(ctx); err == nil {
		t.Fatal("handshake with a wrong key succeeded")
	}
}

func TestDTLSWithECDSACertificateAndCID(t *testing.T) {
	pki := newPKI(t)
	ids := &identities{seen: map[string]bool{}}
	e := startStrict(t, Config{
		UDP:       "",
		DTLS:      &DTLSConfig{Address: "127.0.0.1:0", Certificates: []tls.Certificate{pki.server}, ClientCAs: pki.pool},
		Authorize: ids.authorize,
	})
	// The client's socket changes port mid-session, as behind a NAT that
	// re-maps: with a connection ID the session survives (RFC 9146).
	pc := newRebindConn(t)
	raddr, _ := net.ResolveUDPAddr("udp", e.dtls)
	dc, err := piondtls.ClientWithOptions(pc, raddr,
		piondtls.WithCertificates(pki.client),
		piondtls.WithRootCAs(pki.pool),
		piondtls.WithServerName("localhost"),
		piondtls.WithCipherSuites(piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
		piondtls.WithConnectionIDGenerator(piondtls.OnlySendCIDGenerator()),
	)
	if err != nil {
		t.Fatal(err)
	}
	cc := coapdtls.Client(dc, options.WithErrors(func(error) {}), options.WithPeriodicRunner(testRunner(t)), options.WithCloseSocket())
	t.Cleanup(func() {
		_ = cc.Close()
		<-cc.Done()
	})
	resp, err := cc.Put(ctx5(t), "/ps/devices/7/state", message.AppJSON, bytes.NewReader([]byte(`{"on":true}`)))
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, resp, codes.Changed)
	if !ids.saw("device-7") {
		t.Fatal("certificate CN not passed to Authorize")
	}
	before := pc.LocalAddr().String()
	pc.rebind()
	if pc.LocalAddr().String() == before {
		t.Fatal("rebind kept the port")
	}
	resp, err = cc.Get(ctx5(t), "/ps/devices/7/state")
	if err != nil {
		t.Fatalf("after the address change: %v", err)
	}
	if got := expectCode(t, resp, codes.Content); got != `{"on":true}` {
		t.Fatalf("after the address change: %q", got)
	}
}

// rebindConn is a client UDP socket that can move to a new local port.
type rebindConn struct {
	t   *testing.T
	mu  sync.Mutex
	cur *net.UDPConn
}

func newRebindConn(t *testing.T) *rebindConn {
	c := &rebindConn{t: t}
	c.rebind()
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (c *rebindConn) rebind() {
	n, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	old := c.cur
	c.cur = n
	c.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
}

func (c *rebindConn) conn() *net.UDPConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

func (c *rebindConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		u := c.conn()
		n, a, err := u.ReadFrom(p)
		if err != nil && u != c.conn() {
			continue // moved to a new socket
		}
		return n, a, err
	}
}

func (c *rebindConn) WriteTo(p []byte, a net.Addr) (int, error) { return c.conn().WriteTo(p, a) }
func (c *rebindConn) Close() error                              { return c.conn().Close() }
func (c *rebindConn) LocalAddr() net.Addr                       { return c.conn().LocalAddr() }
func (c *rebindConn) SetDeadline(t time.Time) error             { return c.conn().SetDeadline(t) }
func (c *rebindConn) SetReadDeadline(t time.Time) error         { return c.conn().SetReadDeadline(t) }
func (c *rebindConn) SetWriteDeadline(t time.Time) error        { return c.conn().SetWriteDeadline(t) }

func dialTCP(t *testing.T, addr string, opts ...tcp.Option) *tcpClient.Conn {
	t.Helper()
	opts = append([]tcp.Option{options.WithErrors(func(error) {}), options.WithPeriodicRunner(testRunner(t))}, opts...)
	cc, err := tcp.Dial(addr, opts...)
	return coaptest.Keep(t, cc, err)
}

func TestTCP(t *testing.T) {
	e := start(t, Config{UDP: "", TCP: &TCPConfig{Address: "127.0.0.1:0"}})
	cc := dialTCP(t, e.tcp)
	sub := e.subscriber(t, "t/#")
	big := bytes.Repeat([]byte("z"), 5000)
	resp, err := cc.Put(ctx5(t), "/ps/t/big", message.AppOctets, bytes.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, resp, codes.Changed)
	if m := sub.Next(); !bytes.Equal(m.Payload, big) || m.QoS != 1 {
		t.Fatalf("MQTT got %d bytes qos %d", len(m.Payload), m.QoS)
	}
	resp, err = cc.Get(ctx5(t), "/ps/t/big")
	if err != nil {
		t.Fatal(err)
	}
	if got := expectCode(t, resp, codes.Content); got != string(big) {
		t.Fatalf("GET %d bytes", len(got))
	}
	testObserve(t, e, cc)
}

func TestTCPWithTLS(t *testing.T) {
	pki := newPKI(t)
	e := start(t, Config{UDP: "", TCP: &TCPConfig{Address: "127.0.0.1:0", TLS: &tls.Config{Certificates: []tls.Certificate{pki.server}, MinVersion: tls.VersionTLS12}}})
	cc := dialTCP(t, e.tcp, options.WithTLS(&tls.Config{RootCAs: pki.pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}))
	resp, err := cc.Post(ctx5(t), "/ps/tls/x", message.TextPlain, bytes.NewReader([]byte("ok")))
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, resp, codes.Changed)
}
