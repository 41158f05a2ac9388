package coapadapter

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/edgebridge/gateway/internal/testwait"
)

// do sends a request built by mk and returns the response.
func do(t *testing.T, cc *udpClient.Conn, code codes.Code, path string, body []byte, opts ...message.Option) *pool.Message {
	t.Helper()
	req, err := cc.NewGetRequest(ctx5(t), path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	req.SetCode(code)
	if body != nil {
		req.SetContentFormat(message.TextPlain)
		req.SetBody(bytes.NewReader(body))
	}
	resp, err := cc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func query(q string) message.Option { return message.Option{ID: message.URIQuery, Value: []byte(q)} }

// checkError asserts code, a diagnostic containing want, no Content-Format
// (RFC 7252 §5.5.2) and, for 4.29 and 5.03, Max-Age.
func checkError(t *testing.T, resp *pool.Message, code codes.Code, want string) {
	t.Helper()
	d := expectCode(t, resp, code)
	if !strings.Contains(d, want) {
		t.Fatalf("%v diagnostic %q lacks %q", code, d, want)
	}
	if resp.HasOption(message.ContentFormat) {
		t.Fatalf("%v diagnostic has a Content-Format", code)
	}
	if code == codes.TooManyRequests || code == codes.ServiceUnavailable {
		if age, err := resp.GetOptionUint32(message.MaxAge); err != nil || age == 0 {
			t.Fatalf("%v without Max-Age (%v)", code, err)
		}
	}
}

func TestErrorCodes(t *testing.T) {
	e := start(t, Config{
		MaxPayload:   100,
		MaxObservers: 1,
		Authorize: func(_, action, topic string) bool {
			return !strings.HasPrefix(topic, "secret/")
		},
	})
	cc := dialUDP(t, e.udp)
	small := []byte("x")

	t.Run("4.00 wildcard publish", func(t *testing.T) {
		checkError(t, do(t, cc, codes.POST, "/ps/a/+", small), codes.BadRequest, "publish topic must not contain wildcards")
	})
	t.Run("4.00 reserved topic", func(t *testing.T) {
		checkError(t, do(t, cc, codes.POST, "/ps/$SYS/x", small), codes.BadRequest, "reserved")
	})
	t.Run("4.00 bad qos", func(t *testing.T) {
		checkError(t, do(t, cc, codes.POST, "/ps/a", small, query("qos=3")), codes.BadRequest, "qos=3")
	})
	t.Run("4.00 unknown query", func(t *testing.T) {
		checkError(t, do(t, cc, codes.POST, "/ps/a", small, query("foo=1")), codes.BadRequest, `unknown query option "foo"`)
	})
	t.Run("4.00 bad filter", func(t *testing.T) {
		checkError(t, do(t, cc, codes.GET, "/ps/a/#/b", nil, message.Option{ID: message.Observe, Value: []byte{0}}), codes.BadRequest, "'#' must be the last level")
	})
	t.Run("4.00 missing topic", func(t *testing.T) {
		checkError(t, do(t, cc, codes.POST, "/ps", small), codes.BadRequest, "missing topic")
	})
	t.Run("4.03", func(t *testing.T) {
		checkError(t, do(t, cc, codes.POST, "/ps/secret/x", small), codes.Forbidden, "anonymous may not publish secret/x")
	})
	t.Run("4.04 no resource", func(t *testing.T) {
		checkError(t, do(t, cc, codes.GET, "/nope", nil), codes.NotFound, "no resource at /nope")
	})
	t.Run("4.04 no retained", func(t *testing.T) {
		checkError(t, do(t, cc, codes.GET, "/ps/empty", nil), codes.NotFound, "no retained message on empty")
	})
	t.Run("4.05", func(t *testing.T) {
		checkError(t, do(t, cc, codes.FETCH, "/ps/a", small), codes.MethodNotAllowed, "use GET, POST, PUT or DELETE")
		checkError(t, do(t, cc, codes.POST, "/.well-known/core", small), codes.MethodNotAllowed, "read-only")
	})
	t.Run("4.06", func(t *testing.T) {
		expectCode(t, do(t, cc, codes.PUT, "/ps/typed", small), codes.Changed)
		checkError(t, do(t, cc, codes.GET, "/ps/typed", nil, message.Option{ID: message.Accept, Value: []byte{50}}), codes.NotAcceptable, "not Content-Format 50")
	})
	t.Run("4.13", func(t *testing.T) {
		resp := do(t, cc, codes.POST, "/ps/a", bytes.Repeat([]byte("y"), 101))
		checkError(t, resp, codes.RequestEntityTooLarge, "over the limit of 100 bytes")
		if s, err := resp.GetOptionUint32(message.Size1); err != nil || s != 100 {
			t.Fatalf("Size1 %d %v", s, err)
		}
	})
	t.Run("4.15", func(t *testing.T) {
		req, _ := cc.NewPostRequest(ctx5(t), "/ps/a", message.MediaType(9999), bytes.NewReader(small))
		resp, err := cc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		checkError(t, resp, codes.UnsupportedMediaType, "unsupported Content-Format 9999")
	})
	t.Run("5.03 observer limit", func(t *testing.T) {
		n := newNotifications()
		obs, err := cc.Observe(ctx5(t), "/ps/o1", n.add)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = obs.Cancel(ctx5(t)) }()
		n.next(t, 0)
		checkError(t, do(t, cc, codes.GET, "/ps/o2", nil, message.Option{ID: message.Observe, Value: []byte{0}}), codes.ServiceUnavailable, "too many observers (limit 1)")
	})
}

func TestUnauthenticated401(t *testing.T) {
	e := startStrict(t, Config{})
	cc := dialUDP(t, e.udp)
	checkError(t, do(t, cc, codes.POST, "/ps/a", []byte("x")), codes.Unauthorized, "authentication required")
	// Discovery stays open.
	expectCode(t, do(t, cc, codes.GET, "/.well-known/core", nil), codes.Content)
}

func TestRateLimit429(t *testing.T) {
	e := start(t, Config{PeerRate: 1})
	cc := dialUDP(t, e.udp)
	expectCode(t, do(t, cc, codes.POST, "/ps/a", []byte("x")), codes.Changed)
	checkError(t, do(t, cc, codes.POST, "/ps/a", []byte("x")), codes.TooManyRequests, "rate limit")
}

func TestPublishTimeout504(t *testing.T) {
	e := start(t, Config{PublishTimeout: time.Nanosecond})
	cc := dialUDP(t, e.udp)
	checkError(t, do(t, cc, codes.POST, "/ps/a", []byte("x")), codes.GatewayTimeout, "did not take the message")
}

func TestBrokerDown503(t *testing.T) {
	e := start(t, Config{})
	cc := dialUDP(t, e.udp)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	checkError(t, do(t, cc, codes.POST, "/ps/a", []byte("x")), codes.ServiceUnavailable, "broker is not running")
}

func TestPeerLimit503(t *testing.T) {
	e := start(t, Config{MaxPeers: 1})
	a := dialRaw(t, e.udp)
	a.send(encode(t, a.request(message.Confirmable, codes.GET, "t", -1, ".well-known", "core")))
	if _, m, ok := a.recv(time.Second); !ok || m.Code != codes.Content {
		t.Fatalf("first peer: %+v", m)
	}
	b := dialRaw(t, e.udp)
	b.send(encode(t, b.request(message.Confirmable, codes.GET, "t", -1, ".well-known", "core")))
	_, m, ok := b.recv(time.Second)
	if !ok || m.Code != codes.ServiceUnavailable || !strings.Contains(string(m.Payload), "too many peers") {
		t.Fatalf("second peer: %+v", m)
	}
	if age, err := m.Options.GetUint32(message.MaxAge); err != nil || age == 0 {
		t.Fatalf("Max-Age %d %v", age, err)
	}
}

func TestIdlePeersAreClosed(t *testing.T) {
	e := start(t, Config{IdleTimeout: 50 * time.Millisecond})
	c := dialRaw(t, e.udp)
	c.send(encode(t, c.request(message.Confirmable, codes.GET, "t", -1, ".well-known", "core")))
	if _, _, ok := c.recv(time.Second); !ok {
		t.Fatal("no answer")
	}
	peers := func() int {
		e.s.peersMu.Lock()
		defer e.s.peersMu.Unlock()
		return len(e.s.peers)
	}
	if peers() != 1 {
		t.Fatalf("%d peers", peers())
	}
	testwait.For(t, "idle peer closed", func() bool { return peers() == 0 })
	// An observer is not idle.
	observeRaw(t, c, "keep", "ps", "k")
	time.Sleep(200 * time.Millisecond)
	if peers() != 1 {
		t.Fatalf("observer's peer closed while observing")
	}
}
