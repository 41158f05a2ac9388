package coapadapter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/edgebridge/gateway/bridge/egress"
	"github.com/edgebridge/gateway/mapping"
)

// EgressOptions shape the CoAP client side (coap_out and coap_observe).
// The zero value is usable.
type EgressOptions struct {
	// PSKKey is the DTLS key for coaps:// URLs when the route's PSK names
	// a key file (mapping leaves reading files to the config loader); nil
	// means the key in the route.
	PSKKey []byte
	// Logger receives go-coap's and pion's errors; nil discards them.
	Logger *slog.Logger
	// MaxConns bounds the device connections one coap_out route keeps
	// open (its URL may name many hosts); 0 means 64.
	MaxConns int
}

func (o EgressOptions) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// egressConn is one client connection with the stop channel of its
// periodic runner.
type egressConn struct {
	cc   *udpclient.Conn
	stop chan struct{}
	once sync.Once
}

func (c *egressConn) close() {
	c.once.Do(func() {
		_ = c.cc.Close()
		close(c.stop)
	})
}

// egressDialer opens UDP or DTLS (PSK) client connections.
type egressDialer struct {
	identity string
	key      []byte
	parallel int64
	log      *slog.Logger
}

func newEgressDialer(psk *mapping.PSK, opts EgressOptions, parallel int) (*egressDialer, error) {
	d := &egressDialer{parallel: int64(max(parallel, 1)), log: opts.logger()}
	if psk != nil {
		d.identity, d.key = psk.Identity, psk.Key
		if opts.PSKKey != nil {
			d.key = opts.PSKKey
		}
		if len(d.key) == 0 {
			return nil, fmt.Errorf("coap egress: psk %q has no key (key_hex_file %q not loaded)", psk.Identity, psk.KeyFile)
		}
	}
	return d, nil
}

// egressHostPort adds the default port of the scheme (RFC 7252 §6.1, §6.2).
func egressHostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := "5683"
	if u.Scheme == "coaps" {
		port = "5684"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// dial opens a connection to hostport, over DTLS for coaps.
func (d *egressDialer) dial(ctx context.Context, scheme, hostport string) (*egressConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := &egressConn{stop: make(chan struct{})}
	opts := []udp.Option{
		options.WithErrors(func(err error) { d.log.Debug("coap client", "peer", hostport, "error", err) }),
		options.WithPeriodicRunner(egressRunner(c.stop)),
		options.WithLimitClientParallelRequest(d.parallel),
	}
	var err error
	if scheme == "coaps" {
		key := d.key
		c.cc, err = coapdtls.Dial(hostport, coapdtls.NewDTLSClientOptions(
			piondtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
			piondtls.WithPSKIdentityHint([]byte(d.identity)),
			piondtls.WithCipherSuites(pskSuites...),
			piondtls.WithLoggerFactory(pionLogs{d.log}),
		), opts...)
	} else {
		c.cc, err = udp.Dial(hostport, opts...)
	}
	if err != nil {
		close(c.stop)
		return nil, err
	}
	return c, nil
}

// egressRunner runs go-coap's periodic checks (retransmissions,
// expirations) until stop is closed or the connection ends.
func egressRunner(stop <-chan struct{}) func(func(time.Time) bool) {
	return func(f func(time.Time) bool) {
		go func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case now := <-t.C:
					if !f(now) {
						return
					}
				}
			}
		}()
	}
}

// egressCode formats a CoAP code as "2.05".
func egressCode(c codes.Code) string {
	return fmt.Sprintf("%d.%02d", uint8(c)>>5, uint8(c)&0x1f)
}

// egressRequest builds a request for u (path and query from the URL).
func egressRequest(ctx context.Context, cc *udpclient.Conn, method string, u *url.URL, payload []byte, contentType string, confirmable bool) (*pool.Message, error) {
	path := u.Path
	if path == "" {
		path = "/"
	}
	cf, hasCF := contentFormat(contentType)
	var body *bytes.Reader
	if len(payload) > 0 {
		body = bytes.NewReader(payload)
	}
	var (
		req *pool.Message
		err error
	)
	switch method {
	case "GET":
		req, err = cc.NewGetRequest(ctx, path)
	case "DELETE":
		req, err = cc.NewDeleteRequest(ctx, path)
	case "PUT":
		if body == nil {
			req, err = cc.NewPutRequest(ctx, path, cf, nil)
		} else {
			req, err = cc.NewPutRequest(ctx, path, cf, body)
		}
	default:
		if body == nil {
			req, err = cc.NewPostRequest(ctx, path, cf, nil)
		} else {
			req, err = cc.NewPostRequest(ctx, path, cf, body)
		}
	}
	if err != nil {
		return nil, err
	}
	if !hasCF {
		req.Remove(message.ContentFormat)
	}
	if u.RawQuery != "" {
		for _, q := range strings.Split(u.RawQuery, "&") {
			if q == "" {
				continue
			}
			if uq, err := url.QueryUnescape(q); err == nil {
				q = uq
			}
			req.AddQuery(q)
		}
	}
	if !confirmable {
		req.SetType(message.NonConfirmable)
	}
	return req, nil
}

// egressDevice delivers the messages of one coap_out route.
type egressDevice struct {
	route string
	out   *mapping.CoAPOut
	dial  *egressDialer
	max   int

	mu     sync.Mutex
	conns  map[string]*egressConn
	closed bool
}

// EgressDevice returns the [egress.Deliverer] of a coap_out route: each
// message becomes one CoAP request (CON or NON, as configured) to the
// route's URL filled with the captured variables, over UDP (coap://) or
// DTLS with the route's PSK (coaps://). The payload is the body
// (block-wise, RFC 7959, when it exceeds one datagram) and the message's
// content type becomes the Content-Format when CoAP has one for it. A 2.xx
// answer is success; 5.xx, 4.29, timeouts and connection errors are
// retried; other 4.xx are permanent. Connections are kept per host and
// dropped after an error. Close closes them.
func EgressDevice(r *mapping.Route, opts EgressOptions) (egress.Deliverer, error) {
	if r == nil || r.CoAPOut == nil {
		return nil, errors.New("coap egress: route has no coap_out")
	}
	d, err := newEgressDialer(r.CoAPOut.PSK, opts, r.Delivery.MaxInFlight)
	if err != nil {
		return nil, err
	}
	m := opts.MaxConns
	if m <= 0 {
		m = 64
	}
	return &egressDevice{route: r.Name, out: r.CoAPOut, dial: d, max: m, conns: map[string]*egressConn{}}, nil
}

func (e *egressDevice) conn(ctx context.Context, scheme, hostport string) (*egressConn, error) {
	key := scheme + "://" + hostport
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, errors.New("coap egress: closed")
	}
	if c, ok := e.conns[key]; ok {
		select {
		case <-c.cc.Done():
			delete(e.conns, key)
		default:
			e.mu.Unlock()
			return c, nil
		}
	}
	e.mu.Unlock()
	c, err := e.dial.dial(ctx, scheme, hostport)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		c.close()
		return nil, errors.New("coap egress: closed")
	}
	if old, ok := e.conns[key]; ok { // another worker dialled meanwhile
		c.close()
		return old, nil
	}
	if len(e.conns) >= e.max {
		for k, old := range e.conns { // evict one
			old.close()
			delete(e.conns, k)
			break
		}
	}
	e.conns[key] = c
	return c, nil
}

func (e *egressDevice) drop(key string, c *egressConn) {
	e.mu.Lock()
	if e.conns[key] == c {
		delete(e.conns, key)
	}
	e.mu.Unlock()
	c.close()
}

// Deliver implements [egress.Deliverer].
func (e *egressDevice) Deliver(ctx context.Context, d *egress.Delivery) (egress.Response, error) {
	raw, err := e.out.URL.Expand(d.Vars)
	if err != nil {
		return egress.Response{}, egress.Permanent(fmt.Errorf("url: %w", err))
	}
	u, err := url.Parse(raw)
	if err != nil {
		return egress.Response{}, egress.Permanent(fmt.Errorf("url %q: %w", raw, err))
	}
	hp := egressHostPort(u)
	c, err := e.conn(ctx, u.Scheme, hp)
	if err != nil {
		return egress.Response{}, err
	}
	req, err := egressRequest(ctx, c.cc, e.out.Method, u, d.Message.Payload, d.Message.ContentType, e.out.Confirmable)
	if err != nil {
		return egress.Response{}, egress.Permanent(err)
	}
	resp, err := c.cc.Do(req)
	c.cc.ReleaseMessage(req)
	if err != nil {
		// Timeout or connection trouble: a device (or its DTLS session)
		// may have restarted, so start afresh next time.
		e.drop(u.Scheme+"://"+hp, c)
		return egress.Response{}, err
	}
	return egressAnswer(resp)
}

// egressAnswer copies a response out of go-coap's pool and classifies it.
func egressAnswer(resp *pool.Message) (egress.Response, error) {
	out := egress.Response{Status: egressCode(resp.Code())}
	if body, err := resp.ReadBody(); err == nil && len(body) > 0 {
		out.Payload = bytes.Clone(body)
	}
	if cf, err := resp.ContentFormat(); err == nil {
		out.ContentType, _ = contentTypeOf(cf)
	}
	class := uint8(resp.Code()) >> 5
	switch {
	case class == 2:
		return out, nil
	case class == 5 || resp.Code() == codes.Code(4<<5|29):
		return out, &egress.StatusError{Response: out, Retryable: true}
	default:
		return out, &egress.StatusError{Response: out}
	}
}

// Close closes the route's connections.
func (e *egressDevice) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	for k, c := range e.conns {
		c.close()
		delete(e.conns, k)
	}
}
