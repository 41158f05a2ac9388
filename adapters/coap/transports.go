package coapadapter

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"time"

	dtls "github.com/pion/dtls/v3"
	"github.com/pion/logging"
	dtlsServer "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapNet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	tcpClient "github.com/plgd-dev/go-coap/v3/tcp/client"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// handshakeTimeout bounds a DTLS or TLS handshake.
const handshakeTimeout = 10 * time.Second

// PSK cipher suites that interoperate with libcoap (STYLE field notes):
// pion/dtls with only a PSK callback refuses to start unless they are listed.
var pskSuites = []dtls.CipherSuiteID{
	dtls.TLS_PSK_WITH_AES_128_CCM_8,
	dtls.TLS_PSK_WITH_AES_128_CCM,
	dtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
	dtls.TLS_PSK_WITH_AES_128_CBC_SHA256,
	dtls.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256,
}

// certSuites are the ECDSA certificate suites; CCM_8 is the one of RFC 7252
// §9.1.3.3.
var certSuites = []dtls.CipherSuiteID{
	dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,
	dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM,
	dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	dtls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
}

// dtlsOptions builds the pion/dtls v3 server options: PSK and/or ECDSA
// certificates with explicit cipher suites, and RFC 9146 connection IDs so
// a device keeps its session when its NAT mapping changes.
func (s *Server) dtlsOptions() []dtls.ServerOption {
	d := s.cfg.DTLS
	var suites []dtls.CipherSuiteID
	opts := []dtls.ServerOption{
		dtls.WithConnectionIDGenerator(dtls.RandomCIDGenerator(8)),
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
		dtls.WithLoggerFactory(pionLogs{s.log.With("component", "coap-dtls")}),
	}
	if len(d.PSK) > 0 {
		keys := maps.Clone(d.PSK)
		opts = append(opts, dtls.WithPSK(func(identity []byte) ([]byte, error) {
			if k, ok := keys[string(identity)]; ok {
				return k, nil
			}
			return nil, fmt.Errorf("unknown psk identity %q", identity)
		}))
		suites = append(suites, pskSuites...)
	}
	if len(d.Certificates) > 0 {
		opts = append(opts, dtls.WithCertificates(d.Certificates...))
		suites = append(suites, certSuites...)
		if d.ClientCAs != nil {
			opts = append(opts, dtls.WithClientCAs(d.ClientCAs), dtls.WithClientAuth(dtls.VerifyClientCertIfGiven))
		}
	}
	return append(opts, dtls.WithCipherSuites(suites...))
}

// serveDTLS accepts DTLS sessions until the listener closes.
func (s *Server) serveDTLS() {
	for {
		c, err := s.dtlsLn.Accept()
		if err != nil {
			if errors.Is(err, coapNet.ErrListenerIsClosed) || errors.Is(err, net.ErrClosed) || !s.running() {
				return
			}
			s.coapErrors(fmt.Errorf("dtls accept: %w", err))
			continue
		}
		if !s.goRun(func() { s.serveDTLSConn(c) }) {
			_ = c.Close()
			return
		}
	}
}

// serveDTLSConn runs one DTLS session: handshake, then the same go-coap
// connection as for UDP (cheap cache, our monitors) over go-coap's DTLS
// session.
func (s *Server) serveDTLSConn(c net.Conn) {
	if h, ok := c.(interface{ HandshakeContext(context.Context) error }); ok {
		ctx, cancel := context.WithTimeout(s.ctx, handshakeTimeout)
		err := h.HandshakeContext(ctx)
		cancel()
		if err != nil {
			s.coapErrors(fmt.Errorf("%v: dtls handshake: %w", c.RemoteAddr(), err))
			_ = c.Close()
			return
		}
	}
	p := newPeer(s, "dtls", dtlsIdentity(c))
	sess := &dtlsSession{
		Session: dtlsServer.NewSession(context.WithValue(s.ctx, peerKey{}, p), coapNet.NewConn(c), maxDatagram, udpClient.DefaultMTU, true),
		p:       p,
	}
	cc := s.newDatagramConn(sess, p)
	cc.AddOnClose(p.cleanup)
	s.addPeer(p) // closes p when shutting down; Run then returns at once
	if err := cc.Run(); err != nil && s.running() {
		s.coapErrors(fmt.Errorf("%v: dtls session: %w", c.RemoteAddr(), err))
	}
	p.cleanup()
}

// dtlsSession is go-coap's DTLS session with our write hook (peer.sent).
type dtlsSession struct {
	*dtlsServer.Session
	p *peer
}

// WriteMessage records notification message IDs, then writes.
func (s *dtlsSession) WriteMessage(req *pool.Message) error {
	s.p.sent(req)
	return s.Session.WriteMessage(req)
}

// serveTCP accepts CoAP over TCP (RFC 8323), or TLS, until the listener
// closes.
func (s *Server) serveTCP() {
	for {
		c, err := s.tcpLn.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || !s.running() {
				return
			}
			s.coapErrors(fmt.Errorf("tcp accept: %w", err))
			time.Sleep(10 * time.Millisecond) // e.g. out of file descriptors
			continue
		}
		if !s.goRun(func() { s.serveTCPConn(c) }) {
			_ = c.Close()
			return
		}
	}
}

// serveTCPConn runs one TCP connection with go-coap's tcp/client.Conn.
func (s *Server) serveTCPConn(c net.Conn) {
	if s.cfg.TCP.TLS != nil {
		tc := tls.Server(c, s.cfg.TCP.TLS)
		ctx, cancel := context.WithTimeout(s.ctx, handshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			s.coapErrors(fmt.Errorf("%v: tls handshake: %w", c.RemoteAddr(), err))
			_ = c.Close()
			return
		}
		c = tc
	}
	identity := ""
	if tc, ok := c.(*tls.Conn); ok {
		st := tc.ConnectionState()
		if len(st.PeerCertificates) > 0 {
			identity = st.PeerCertificates[0].Subject.CommonName
		}
	}
	p := newPeer(s, "tcp", identity)
	cfg := tcpClient.DefaultConfig
	cfg.Ctx = context.WithValue(s.ctx, peerKey{}, p)
	cfg.Handler = mux.ToHandler[*tcpClient.Conn](s.handler)
	cfg.Errors = s.coapErrors
	cfg.MessagePool = s.msgPool
	cfg.MaxMessageSize = uint32(s.cfg.MaxPayload + 1024)
	cfg.BlockwiseEnable = true
	cfg.BlockwiseSZX = blockwise.SZX1024
	cfg.BlockwiseTransferTimeout = blockTransferTimeout
	cfg.CloseSocket = true
	cc := tcpClient.NewConnWithOpts(coapNet.NewConn(c), &cfg,
		tcpClient.WithInactivityMonitor(idleMonitor[*tcpClient.Conn]{p}),
		tcpClient.WithBlockWise(func(cc *tcpClient.Conn) *blockwise.BlockWise[*tcpClient.Conn] {
			return newBlockWise(s, cc, nil)
		}),
	)
	p.conn = cc
	p.checkExp = cc.CheckExpirations
	p.closeFn = cc.Close
	cc.AddOnClose(p.cleanup)
	s.addPeer(p) // closes p when shutting down; Run then returns at once
	if err := cc.Run(); err != nil && s.running() {
		s.coapErrors(fmt.Errorf("%v: tcp connection: %w", c.RemoteAddr(), err))
	}
	p.cleanup()
}

// pionLogs routes pion/dtls logs to slog (debug for its chatter, warn and
// error as such).
type pionLogs struct{ log *slog.Logger }

// NewLogger returns the logger of one pion scope.
func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.log.With("scope", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) Trace(string)                 {}
func (l pionLogger) Tracef(string, ...any)        {}
func (l pionLogger) Debug(msg string)             { l.log.Debug(msg) }
func (l pionLogger) Debugf(f string, args ...any) { l.log.Debug(fmt.Sprintf(f, args...)) }
func (l pionLogger) Info(msg string)              { l.log.Debug(msg) }
func (l pionLogger) Infof(f string, args ...any)  { l.log.Debug(fmt.Sprintf(f, args...)) }
func (l pionLogger) Warn(msg string)              { l.log.Warn(msg) }
func (l pionLogger) Warnf(f string, args ...any)  { l.log.Warn(fmt.Sprintf(f, args...)) }
func (l pionLogger) Error(msg string)             { l.log.Error(msg) }
func (l pionLogger) Errorf(f string, args ...any) { l.log.Error(fmt.Sprintf(f, args...)) }

// newBlockWise is the RFC 7959 state of one peer, the same on every
// transport: transfers up to MaxPayload, expiring blockTransferTimeout after
// their last block, at most 16 reassemblies at once. sentRequest finds the
// observation a block-wise notification belongs to (nil: none).
func newBlockWise[C blockwise.Client](s *Server, cc C, sentRequest func(message.Token) (*pool.Message, bool)) *blockwise.BlockWise[C] {
	bw := blockwise.New(cc, blockTransferTimeout, s.coapErrors, sentRequest)
	bw.SetMaxReceiveBodySize(int64(s.cfg.MaxPayload))
	bw.SetRollingExpiration(true)
	bw.SetReceivingMessagesCacheMaxEntries(16)
	return bw
}
