package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// Listener is one MQTT listener: plain TCP, TLS (TLS set) or WebSocket
// (WebSocket true; with TLS set it is wss).
type Listener struct {
	Address   string      // host:port; ":0" picks a free port
	WebSocket bool        // MQTT over WebSocket (subprotocol "mqtt") at any path
	TLS       *tls.Config // nil for plain text
}

// kind names the listener for logs and Addrs.
func (l Listener) kind() string {
	switch {
	case l.WebSocket && l.TLS != nil:
		return "wss"
	case l.WebSocket:
		return "ws"
	case l.TLS != nil:
		return "tls"
	}
	return "tcp"
}

// bind opens the socket now, so that Start fails early on a busy port and the
// real address of a ":0" listener is known before any client connects.
func (l Listener) bind(id string) (listeners.Listener, error) {
	ln, err := net.Listen("tcp", l.Address)
	if err != nil {
		return nil, fmt.Errorf("mqtt %s listener %s: %w", l.kind(), l.Address, err)
	}
	if l.TLS != nil {
		ln = tls.NewListener(ln, l.TLS)
	}
	if l.WebSocket {
		return newWSListener(id, ln), nil
	}
	return listeners.NewNet(id, ln), nil
}

// wsListener serves MQTT over WebSocket on an already bound socket. mochi's
// own WebSocket listener binds only in Serve and cannot report the port of
// ":0", so we keep this small one.
type wsListener struct {
	id        string
	ln        net.Listener
	srv       *http.Server
	log       *slog.Logger
	upgrader  websocket.Upgrader
	establish listeners.EstablishFn
	once      sync.Once
}

func newWSListener(id string, ln net.Listener) *wsListener {
	return &wsListener{
		id: id,
		ln: ln,
		upgrader: websocket.Upgrader{
			Subprotocols: []string{"mqtt"},
			// Browsers send Origin; MQTT over WebSocket is authenticated by
			// the MQTT CONNECT, as in mosquitto and EMQX.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
}

func (l *wsListener) ID() string       { return l.id }
func (l *wsListener) Address() string  { return l.ln.Addr().String() }
func (l *wsListener) Protocol() string { return "ws" }

func (l *wsListener) Init(log *slog.Logger) error {
	l.log = log
	l.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		Handler:           http.HandlerFunc(l.serveWS),
	}
	return nil
}

// serveWS upgrades one connection and hands it to the broker. It runs only
// after Serve has set establish (http.Server starts handlers after Serve).
func (l *wsListener) serveWS(w http.ResponseWriter, r *http.Request) {
	c, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered with an HTTP error
	}
	defer func() { _ = c.Close() }()
	if err := l.establish(l.id, &wsConn{Conn: c.NetConn(), c: c}); err != nil {
		l.log.Debug("websocket client ended", "error", err)
	}
}

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.establish = establish
	if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.log.Error("websocket listener stopped", "error", err)
	}
}

func (l *wsListener) Close(closeClients listeners.CloseFn) {
	l.once.Do(func() {
		// Hijacked connections are not tracked by http.Server: closing
		// the clients below ends their handlers.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = l.srv.Shutdown(ctx)
		_ = l.ln.Close()
	})
	closeClients(l.id)
}

// wsConn turns a WebSocket into the byte stream mochi reads packets from: one
// or more MQTT packets per binary message [MQTT-6.0.0-1] [MQTT-6.0.0-2].
type wsConn struct {
	net.Conn
	c *websocket.Conn
	r io.Reader
}

func (ws *wsConn) Read(p []byte) (int, error) {
	for {
		if ws.r == nil {
			op, r, err := ws.c.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errors.New("mqtt over websocket needs binary messages")
			}
			ws.r = r
		}
		n, err := ws.r.Read(p)
		if errors.Is(err, io.EOF) {
			ws.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (ws *wsConn) Write(p []byte) (int, error) {
	if err := ws.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
