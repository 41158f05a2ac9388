package coapadapter

import (
	"crypto/x509"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/mux"
)

// peer is one remote endpoint: a UDP source address, a DTLS session or a
// TCP connection. It carries what the handlers need to know about who is
// asking (identity) and the peer's observations.
type peer struct {
	s         *Server
	transport string // "udp", "dtls" or "tcp"
	identity  string // DTLS PSK identity or certificate CN; "" = anonymous
	reliable  bool   // TCP: no CON/NON, no RST

	udp      *udpPeer // plain UDP: the notification fast path
	conn     mux.Conn
	cache    *dedupCache         // UDP and DTLS: the response cache
	checkExp func(now time.Time) // the go-coap conn's CheckExpirations
	closeFn  func() error        // closes the go-coap conn

	lastActive atomic.Int64 // unix nanoseconds

	mu        sync.Mutex
	observers map[string]*observer // by token
	mids      map[int32]*observer  // message IDs of recent notifications
	closed    bool
	tokens    float64 // rate limit bucket
	refilled  time.Time
	closeOnce sync.Once
}

func newPeer(s *Server, transport, identity string) *peer {
	p := &peer{s: s, transport: transport, identity: identity, reliable: transport == "tcp",
		tokens: s.cfg.PeerRate, refilled: time.Now()}
	p.touch()
	return p
}

// touch records traffic from the peer.
func (p *peer) touch() { p.lastActive.Store(time.Now().UnixNano()) }

// idle reports whether the peer may be closed for inactivity: nothing
// received for IdleTimeout and no observation to keep alive.
func (p *peer) idle(now time.Time) bool {
	if p.s.cfg.IdleTimeout < 0 || now.UnixNano()-p.lastActive.Load() < int64(p.s.cfg.IdleTimeout) {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.observers) == 0
}

// allow takes one token of the peer's rate limit; when there is none it
// returns how long until there is.
func (p *peer) allow(now time.Time) (bool, time.Duration) {
	rate := p.s.cfg.PeerRate
	if rate <= 0 {
		return true, 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tokens = min(rate, p.tokens+now.Sub(p.refilled).Seconds()*rate)
	p.refilled = now
	if p.tokens >= 1 {
		p.tokens--
		return true, 0
	}
	return false, time.Duration((1 - p.tokens) / rate * float64(time.Second))
}

// checkExpirations runs the periodic work of the peer's connection and
// retransmits fast-path notifications.
func (p *peer) checkExpirations(now time.Time) {
	if p.checkExp != nil {
		p.checkExp(now)
	}
	if p.udp == nil {
		return
	}
	p.mu.Lock()
	var due []*observer
	for _, o := range p.observers {
		due = append(due, o)
	}
	p.mu.Unlock()
	for _, o := range due {
		o.retransmit(now)
	}
}

// close closes the peer's connection; cleanup follows from its on-close
// callback.
func (p *peer) close() {
	p.closeOnce.Do(func() {
		if p.closeFn != nil {
			_ = p.closeFn()
		}
	})
}

// cleanup runs once the connection is closed: it ends the peer's
// observations and forgets the peer.
func (p *peer) cleanup() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	obs := make([]*observer, 0, len(p.observers))
	for _, o := range p.observers {
		obs = append(obs, o)
	}
	p.mu.Unlock()
	for _, o := range obs {
		o.end("connection closed")
	}
	p.s.removePeer(p)
}

// monitorRequest sees every message from the peer before go-coap handles it
// (udpClient.WithRequestMonitor): a Reset matching a notification ends that
// observation (RFC 7641 §3.6, §4.5), and a request that reuses a cached
// message ID with a new token is not answered from the cache.
func (p *peer) monitorRequest(req *pool.Message) {
	switch req.Type() {
	case message.Reset:
		p.mu.Lock()
		o := p.mids[req.MessageID()]
		p.mu.Unlock()
		if o != nil {
			o.end("reset by peer")
		}
	case message.Acknowledgement:
		if p.udp == nil {
			return
		}
		p.mu.Lock()
		o := p.mids[req.MessageID()]
		p.mu.Unlock()
		if o != nil {
			o.acked(req.MessageID())
		}
	case message.Confirmable, message.NonConfirmable:
		if p.cache != nil && req.Code() >= codes.GET && req.Code() < 32 {
			p.cache.forgetIfReused(req.MessageID(), req.Token())
		}
	}
}

// idleMonitor implements go-coap's InactivityMonitor for any connection
// type: it closes the connection once the peer is idle.
type idleMonitor[C interface{ Close() error }] struct{ p *peer }

// Notify records activity.
func (m idleMonitor[C]) Notify() { m.p.touch() }

// CheckInactivity closes an idle connection.
func (m idleMonitor[C]) CheckInactivity(now time.Time, cc C) {
	if m.p.idle(now) {
		m.p.s.log.Debug("closing idle coap peer", "transport", m.p.transport, "peer", m.p.conn.RemoteAddr())
		_ = cc.Close()
	}
}

// certCN returns the subject CN of the first (leaf) certificate.
func certCN(raw [][]byte) string {
	if len(raw) == 0 {
		return ""
	}
	c, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return ""
	}
	return c.Subject.CommonName
}

// sent sees every message written to a UDP or DTLS peer. It records the
// message ID of each notification, so that an RST for it can be matched to
// its observation: go-coap picks the ID itself (block-wise writes drop the
// one the caller set).
func (p *peer) sent(msg *pool.Message) {
	if t := msg.Type(); (t != message.Confirmable && t != message.NonConfirmable) || !msg.HasOption(message.Observe) {
		return
	}
	p.mu.Lock()
	o := p.observers[string(msg.Token())]
	p.mu.Unlock()
	if o != nil {
		o.rememberMID(msg.MessageID())
	}
}
