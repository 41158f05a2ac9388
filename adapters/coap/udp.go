package coapadapter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapNet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options/config"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// socketBuffer is the receive and send buffer we ask for: a fan-out to
// 10,000 observers brings 10,000 ACKs back at once, and the kernel counts
// about 1 KiB per small datagram.
const socketBuffer = 16 << 20

// maxDatagram is the largest UDP payload we read.
const maxDatagram = 65535

// blockTransferTimeout bounds a half-done block-wise transfer; each new block
// extends it (rolling expiration).
const blockTransferTimeout = 30 * time.Second

// receivedQueue is the per-peer queue between the read loop and the peer's
// handler goroutine.
const receivedQueue = 256

// dedupMaxEntries caps the response cache of one peer (see dedupCache).
const dedupMaxEntries = 16384

// udpListener is our read loop for plain CoAP over UDP. Each source address
// gets a peer with a go-coap udp/client.Conn over a udpSession, created with
// public go-coap pieces only, and our cheap response cache.
type udpListener struct {
	s     *Server
	conn  *net.UDPConn
	batch *batchIO // nil: one system call per datagram

	mu    sync.Mutex
	peers map[netip.AddrPort]*udpPeer
}

// udpPeer binds a peer to its go-coap connection.
type udpPeer struct {
	*peer
	cc *udpClient.Conn
	l  *udpListener
	to netip.AddrPort
}

// write sends a datagram we encoded ourselves (fast-path notifications).
func (up *udpPeer) write(data []byte) error {
	if up.l.batch != nil {
		return up.l.batch.send(data, up.to)
	}
	_, err := up.l.conn.WriteToUDPAddrPort(data, up.to)
	return err
}

func listenUDP(s *Server, addr string) (*udpListener, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	setSocketBuffers(c, socketBuffer)
	l := &udpListener{s: s, conn: c, peers: make(map[netip.AddrPort]*udpPeer)}
	l.batch = newBatchIO(l)
	return l, nil
}

// serve reads datagrams until the socket is closed.
func (l *udpListener) serve() {
	if l.batch != nil {
		l.s.goRun(l.batch.write)
		l.batch.read()
		return
	}
	buf := make([]byte, maxDatagram+1)
	for {
		n, from, err := l.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || !l.s.running() {
				return
			}
			l.s.log.Warn("coap udp read", "error", err)
			continue
		}
		l.handleDatagram(buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
	}
}

// handleDatagram hands one datagram to its peer's connection.
func (l *udpListener) handleDatagram(d []byte, from netip.AddrPort) {
	// RFC 7252 §3: a datagram too short for a header, or of another
	// version, is silently ignored; no peer state is created for it.
	if len(d) < 4 || d[0]>>6 != 1 {
		return
	}
	up, err := l.peer(from)
	if err != nil {
		l.refuse(d, from, err)
		return
	}
	if err := up.cc.Process(nil, d); err != nil {
		var malformed *udpClient.MalformedMessageError
		if errors.As(err, &malformed) {
			l.s.coapErrors(fmt.Errorf("%v: dropping malformed datagram: %w", from, err))
			if malformed.HasHeader && malformed.Type == message.Confirmable {
				// RFC 7252 §4.2: reject a malformed CON with RST.
				_, _ = l.conn.WriteToUDPAddrPort(rstDatagram(uint16(malformed.MessageID)), from)
			}
			return
		}
		l.s.coapErrors(fmt.Errorf("%v: %w", from, err))
		up.close()
	}
}

// errTooManyPeers is returned for a new peer above Config.MaxPeers.
var errTooManyPeers = errors.New("too many peers")

// peer returns the peer of from, creating it if needed.
func (l *udpListener) peer(from netip.AddrPort) (*udpPeer, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if up := l.peers[from]; up != nil {
		if up.cc.Context().Err() == nil {
			return up, nil
		}
		delete(l.peers, from)
	}
	if len(l.peers) >= l.s.cfg.MaxPeers {
		return nil, errTooManyPeers
	}
	p := newPeer(l.s, "udp", "")
	sess := newUDPSession(l, from, p)
	cc := l.s.newDatagramConn(sess, p)
	up := &udpPeer{peer: p, cc: cc, l: l, to: from}
	p.udp = up
	if !l.s.addPeer(p) { // shutting down: addPeer closed it
		return nil, net.ErrClosed
	}
	// Registered only now: it takes l.mu, which we hold, and addPeer may
	// close the session.
	sess.AddOnClose(func() {
		l.mu.Lock()
		if l.peers[from] == up {
			delete(l.peers, from)
		}
		l.mu.Unlock()
		p.cleanup()
	})
	l.peers[from] = up
	return up, nil
}

// refuse answers a datagram that could not get a peer: a CON request gets
// 5.03 with Max-Age, anything else is dropped.
func (l *udpListener) refuse(d []byte, from netip.AddrPort, cause error) {
	l.s.metrics.refused.Inc()
	m := message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(d, &m); err != nil || m.Type != message.Confirmable || m.Code < codes.GET || m.Code >= 32 {
		return
	}
	resp := message.Message{
		Token: m.Token, Code: codes.ServiceUnavailable, Type: message.Acknowledgement, MessageID: m.MessageID,
		Payload: []byte("server overloaded: " + cause.Error()),
	}
	var buf [4]byte
	resp.Options, _, _ = message.Options{}.SetUint32(buf[:], message.MaxAge, uint32(retryAfter/time.Second))
	size, err := coder.DefaultCoder.Size(resp)
	if err != nil {
		return
	}
	out := make([]byte, size)
	if n, err := coder.DefaultCoder.Encode(resp, out); err == nil {
		_, _ = l.conn.WriteToUDPAddrPort(out[:n], from)
	}
}

// rstDatagram is an empty Reset for message ID mid.
func rstDatagram(mid uint16) []byte {
	d := []byte{0x70, 0, 0, 0}
	binary.BigEndian.PutUint16(d[2:], mid)
	return d
}

// newDatagramConn builds the go-coap connection of a UDP or DTLS peer with our
// handler, cache, block-wise limits and monitors.
func (s *Server) newDatagramConn(sess udpClient.Session, p *peer) *udpClient.Conn {
	cfg := udpClient.DefaultConfig
	cfg.Ctx = s.ctx
	cfg.Handler = mux.ToHandler[*udpClient.Conn](s.handler)
	cfg.Errors = s.coapErrors
	cfg.MessagePool = s.msgPool
	cfg.TransmissionAcknowledgeTimeout = s.cfg.AckTimeout
	cfg.TransmissionMaxRetransmit = uint32(s.cfg.MaxRetransmit)
	cfg.BlockwiseEnable = true
	cfg.BlockwiseSZX = blockwise.SZX1024
	cfg.BlockwiseTransferTimeout = blockTransferTimeout
	cfg.MaxMessageSize = maxDatagram
	// Process hands each message to the peer's goroutine through this
	// queue and blocks our shared read loop when it is full: a burst of
	// ACKs for a fan-out must fit.
	cfg.ReceivedMessageQueueSize = receivedQueue
	// go-coap v3.8.0 answers a NON request with a CON response, which the
	// peer must acknowledge and go-coap retransmits until it does (RFC
	// 7252 §5.2.3 lets a NON response answer a NON request, and that is
	// what constrained clients expect). Turn it back into NON before it is
	// written.
	cfg.ProcessReceivedMessage = func(req *pool.Message, cc *udpClient.Conn, handler config.HandlerFunc[*udpClient.Conn]) {
		non := req.Type() == message.NonConfirmable
		cc.ProcessReceivedMessageWithHandler(req, func(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) {
			handler(w, r)
			if non && w.Message().Type() == message.Confirmable {
				w.Message().SetType(message.NonConfirmable)
			}
		})
	}
	p.cache = newDedupCache(udpClient.ExchangeLifetime, dedupMaxEntries)
	cc := udpClient.NewConnWithOpts(sess, &cfg,
		udpClient.WithResponseMessageCache(p.cache),
		udpClient.WithInactivityMonitor(idleMonitor[*udpClient.Conn]{p}),
		udpClient.WithRequestMonitor(func(_ *udpClient.Conn, req *pool.Message) (bool, error) {
			p.monitorRequest(req)
			return false, nil
		}),
		udpClient.WithBlockWise(func(cc *udpClient.Conn) *blockwise.BlockWise[*udpClient.Conn] {
			// A closure, not the method value: cc's embedded client is
			// assigned only after this constructor runs.
			return newBlockWise(s, cc, func(token message.Token) (*pool.Message, bool) {
				return cc.GetObservationRequest(token)
			})
		}),
	)
	p.conn = cc
	p.checkExp = cc.CheckExpirations
	p.closeFn = cc.Close
	return cc
}

// udpSession is the go-coap udp/client.Session of one peer on our shared
// socket. Unlike go-coap's udp/server.Session it runs the on-close
// callbacks in Close, since no per-peer read loop exists to do it.
type udpSession struct {
	l      *udpListener
	p      *peer
	raddr  netip.AddrPort
	udpRA  *net.UDPAddr
	ctx    atomic.Pointer[context.Context]
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	onClose []func()
	once    sync.Once
}

// peerKey is the context key under which a connection carries its *peer.
type peerKey struct{}

func newUDPSession(l *udpListener, raddr netip.AddrPort, p *peer) *udpSession {
	ctx, cancel := context.WithCancel(context.WithValue(l.s.ctx, peerKey{}, p))
	s := &udpSession{l: l, p: p, raddr: raddr, udpRA: net.UDPAddrFromAddrPort(raddr), cancel: cancel, done: make(chan struct{})}
	s.ctx.Store(&ctx)
	return s
}

var _ udpClient.Session = (*udpSession)(nil)

// Context ends when the session is closed.
func (s *udpSession) Context() context.Context { return *s.ctx.Load() }

// Close ends the session and runs the on-close callbacks once.
func (s *udpSession) Close() error {
	s.once.Do(func() {
		s.cancel()
		s.mu.Lock()
		fs := s.onClose
		s.onClose = nil
		s.mu.Unlock()
		for _, f := range fs {
			f()
		}
		close(s.done)
	})
	return nil
}

// MaxMessageSize is the largest datagram accepted.
func (s *udpSession) MaxMessageSize() uint32 { return maxDatagram }

// RemoteAddr is the peer's address.
func (s *udpSession) RemoteAddr() net.Addr { return s.udpRA }

// LocalAddr is the listener's address.
func (s *udpSession) LocalAddr() net.Addr { return s.l.conn.LocalAddr() }

// NetConn is the shared socket.
func (s *udpSession) NetConn() net.Conn { return s.l.conn }

// WriteMessage sends one message to the peer.
func (s *udpSession) WriteMessage(req *pool.Message) error {
	data, err := req.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		return err
	}
	s.p.sent(req)
	if s.l.batch != nil {
		return s.l.batch.send(data, s.raddr)
	}
	_, err = s.l.conn.WriteToUDPAddrPort(data, s.raddr)
	return err
}

// WriteMulticastMessage is not supported on a server peer.
func (s *udpSession) WriteMulticastMessage(*pool.Message, *net.UDPAddr, ...coapNet.MulticastOption) error {
	return errors.New("coap: multicast is not supported on a server peer")
}

// Run is not used: the listener's read loop feeds the connection.
func (s *udpSession) Run(*udpClient.Conn) error {
	<-s.done
	return nil
}

// AddOnClose registers f to run when the session closes; after that, f runs
// at once.
func (s *udpSession) AddOnClose(f func()) {
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		f()
		return
	default:
	}
	s.onClose = append(s.onClose, f)
	s.mu.Unlock()
}

// SetContextValue stores a value in the session's context.
func (s *udpSession) SetContextValue(key, val any) {
	ctx := context.WithValue(s.Context(), key, val)
	s.ctx.Store(&ctx)
}

// Done is closed once the session is closed.
func (s *udpSession) Done() <-chan struct{} { return s.done }
