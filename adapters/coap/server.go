package coapadapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	dtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapNet "github.com/plgd-dev/go-coap/v3/net"

	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/mapping"
)

// Server is the CoAP adapter: one set of handlers served over UDP, DTLS and
// TCP. Create it with New, then Start; Shutdown ends it.
type Server struct {
	cfg     Config
	log     *slog.Logger
	broker  *bridge.Broker
	metrics *metrics
	msgPool *pool.Pool
	handler mux.Handler // the dispatcher, shared by all transports

	table atomic.Pointer[mapping.Table] // the mapping's CoAP routes (routes.go)

	obs    *observers
	notify *notifier // UDP notification fast path

	ctx     context.Context // ends at Shutdown; parent of every peer
	cancel  context.CancelFunc
	wg      sync.WaitGroup // every goroutine the server starts
	spawnMu sync.RWMutex   // orders goRun's wg.Add before Shutdown's Wait

	peersMu     sync.Mutex
	peers       map[*peer]struct{}
	peersClosed bool // Shutdown took its snapshot: no new peers

	udp     *udpListener
	dtlsLn  *coapNet.DTLSListener
	tcpLn   net.Listener
	addrUDP string
	addrDT  string
	addrTCP string

	state atomic.Int32 // 0 new, 1 running, 2 stopped
}

const (
	stateNew int32 = iota
	stateRunning
	stateStopped
)

// New checks cfg and prepares a server on broker b; nothing is bound until
// Start.
func New(cfg Config, b *bridge.Broker) (*Server, error) {
	if b == nil {
		return nil, errors.New("coap: nil broker")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "coap"),
		broker:  b,
		metrics: m,
		msgPool: pool.New(1024, 2048),
		peers:   make(map[*peer]struct{}),
	}
	s.obs = newObservers(s)
	s.notify = newNotifier(s)
	s.handler = mux.HandlerFunc(s.serveCOAP)
	return s, nil
}

// Start binds every configured transport and starts serving; it returns once
// all of them accept traffic. ":0" addresses are resolved (see Addrs). On
// error nothing stays bound.
func (s *Server) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !s.state.CompareAndSwap(stateNew, stateRunning) {
		return errors.New("coap: Start called twice")
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.bind(); err != nil {
		s.state.Store(stateStopped)
		s.cancel()
		s.closeListeners()
		return err
	}
	if s.udp != nil {
		s.goRun(s.udp.serve)
	}
	if s.dtlsLn != nil {
		s.goRun(s.serveDTLS)
	}
	if s.tcpLn != nil {
		s.goRun(s.serveTCP)
	}
	s.goRun(s.janitor)
	for range min(4, max(1, runtime.GOMAXPROCS(0))) {
		s.goRun(s.notify.run)
	}
	s.log.Debug("coap adapter started", "udp", s.addrUDP, "dtls", s.addrDT, "tcp", s.addrTCP)
	return nil
}

// bind opens the sockets of every configured transport.
func (s *Server) bind() error {
	if s.cfg.UDP != "" {
		l, err := listenUDP(s, s.cfg.UDP)
		if err != nil {
			return fmt.Errorf("coap udp %s: %w", s.cfg.UDP, err)
		}
		s.udp, s.addrUDP = l, l.conn.LocalAddr().String()
		s.notify.setBudgetFor(socketReadBuffer(l.conn))
	}
	if d := s.cfg.DTLS; d != nil {
		l, err := coapNet.NewDTLSListener("udp", d.Address, coapNet.NewDTLSServerOptions(s.dtlsOptions()...))
		if err != nil {
			return fmt.Errorf("coap dtls %s: %w", d.Address, err)
		}
		s.dtlsLn, s.addrDT = l, l.Addr().String()
	}
	if t := s.cfg.TCP; t != nil {
		l, err := net.Listen("tcp", t.Address)
		if err != nil {
			return fmt.Errorf("coap tcp %s: %w", t.Address, err)
		}
		s.addrTCP = l.Addr().String()
		s.tcpLn = l
	}
	return nil
}

// Addrs returns the bound addresses of the UDP, DTLS and TCP transports;
// "" for a transport that is off.
func (s *Server) Addrs() (udp, dtls, tcp string) { return s.addrUDP, s.addrDT, s.addrTCP }

// Shutdown stops accepting traffic, ends every observation and connection
// and waits for all goroutines of the server, or until ctx ends. It is
// idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.state.CompareAndSwap(stateRunning, stateStopped) {
		s.state.CompareAndSwap(stateNew, stateStopped)
		return nil
	}
	s.cancel()
	s.closeListeners()
	s.peersMu.Lock()
	s.peersClosed = true
	peers := make([]*peer, 0, len(s.peers))
	for p := range s.peers {
		peers = append(peers, p)
	}
	s.peersMu.Unlock()
	for _, p := range peers {
		p.close()
	}
	s.obs.closeAll()
	// No goRun can add to wg after this barrier: they check the state
	// under spawnMu.RLock.
	s.spawnMu.Lock()
	s.spawnMu.Unlock() //nolint:staticcheck // an intentional barrier
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.log.Debug("coap adapter stopped")
		return nil
	case <-ctx.Done():
		return fmt.Errorf("coap shutdown: %w", ctx.Err())
	}
}

func (s *Server) closeListeners() {
	if s.udp != nil {
		_ = s.udp.conn.Close()
	}
	if s.dtlsLn != nil {
		_ = s.dtlsLn.Close()
	}
	if s.tcpLn != nil {
		_ = s.tcpLn.Close()
	}
}

// running reports whether the server is between Start and Shutdown.
func (s *Server) running() bool { return s.state.Load() == stateRunning }

// goRun runs f on a goroutine the server waits for in Shutdown. After
// Shutdown began it starts nothing and returns false.
func (s *Server) goRun(f func()) bool {
	s.spawnMu.RLock()
	defer s.spawnMu.RUnlock()
	if !s.running() {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// goSender starts a notification sender (see goRun).
func (s *Server) goSender(f func()) bool { return s.goRun(f) }

// coapErrors is the error sink of go-coap (options.WithErrors): its errors
// are protocol noise from peers (malformed datagrams, expired exchanges), so
// they go to slog at debug level.
func (s *Server) coapErrors(err error) {
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("coap", "error", err)
	}
}

// janitorTick is how often retransmissions, expirations and idle peers are
// checked: a quarter of the ACK timeout, within [10ms, 250ms].
func (s *Server) janitorTick() time.Duration {
	return min(max(s.cfg.AckTimeout/4, 10*time.Millisecond), 250*time.Millisecond)
}

// janitor drives what go-coap does in CheckExpirations for every peer:
// CON retransmissions, the de-duplication and block-wise caches, and idle
// timeouts. It replaces the per-datagram call of go-coap's UDP server.
func (s *Server) janitor() {
	t := time.NewTicker(s.janitorTick())
	defer t.Stop()
	var batch []*peer
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			s.peersMu.Lock()
			batch = batch[:0]
			for p := range s.peers {
				batch = append(batch, p)
			}
			s.peersMu.Unlock()
			for _, p := range batch {
				p.checkExpirations(now)
			}
			clear(batch)
		}
	}
}

// addPeer registers p for the janitor and for Shutdown. After Shutdown
// began it closes p instead and returns false.
func (s *Server) addPeer(p *peer) bool {
	s.peersMu.Lock()
	if s.peersClosed {
		s.peersMu.Unlock()
		p.close()
		return false
	}
	s.peers[p] = struct{}{}
	s.peersMu.Unlock()
	s.metrics.peers.WithLabelValues(p.transport).Inc()
	return true
}

// removePeer forgets p.
func (s *Server) removePeer(p *peer) {
	s.peersMu.Lock()
	_, ok := s.peers[p]
	delete(s.peers, p)
	s.peersMu.Unlock()
	if ok {
		s.metrics.peers.WithLabelValues(p.transport).Dec()
	}
}

// dtlsIdentity is the identity a DTLS handshake established: the PSK
// identity or the CN of a verified client certificate.
func dtlsIdentity(c net.Conn) string {
	dc, ok := c.(*dtls.Conn)
	if !ok {
		return ""
	}
	st, ok := dc.ConnectionState()
	if !ok {
		return ""
	}
	if len(st.IdentityHint) > 0 {
		return string(st.IdentityHint)
	}
	return certCN(st.PeerCertificates)
}
