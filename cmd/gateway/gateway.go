package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	coapadapter "github.com/edgebridge/gateway/adapters/coap"
	httpadapter "github.com/edgebridge/gateway/adapters/http"
	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/mapping"
)

// gateway is the running product: the broker and the adapters, started in
// dependency order and stopped in reverse.
type gateway struct {
	log    *slog.Logger
	mu     sync.Mutex // guards cur
	cur    *loaded
	broker *bridge.Broker
	// services after the broker, in start order.
	services []service
	http     *httpadapter.Server // nil when off
	coap     *coapadapter.Server // nil when off
	started  atomic.Bool
}

// service is what every adapter offers main.
type service interface {
	Start(ctx context.Context) error
	Shutdown(ctx context.Context) error
}

// newGateway builds every part from a checked config; nothing listens yet.
func newGateway(l *loaded, log *slog.Logger) (*gateway, error) {
	cfg := l.cfg
	g := &gateway{log: log, cur: l}
	var listeners []bridge.Listener
	for _, lc := range cfg.MQTT.Listeners {
		bl := bridge.Listener{Address: lc.Address, WebSocket: lc.WebSocket}
		if lc.TLS != nil {
			tc, err := loadTLS(dirOf(l.file), lc.TLS)
			if err != nil {
				return nil, err
			}
			bl.TLS = tc
		}
		listeners = append(listeners, bl)
	}
	b, err := bridge.New(bridge.Config{
		Listeners:      listeners,
		DataDir:        *cfg.Storage.Path,
		AllowAnonymous: *cfg.Auth.Anonymous,
		MaxPacketSize:  uint32(cfg.Limits.MaxPayload) + 64<<10, // payload plus room for topic and properties
		Logger:         log,
	})
	if err != nil {
		return nil, err
	}
	g.broker = b
	if err := g.addAdapters(l); err != nil {
		return nil, err
	}
	return g, nil
}

// start binds everything; on failure what started is stopped again.
func (g *gateway) start(ctx context.Context) error {
	cfg := g.cur.cfg
	if *cfg.Auth.Anonymous {
		for _, l := range cfg.MQTT.Listeners {
			if !isLoopback(l.Address) {
				g.log.Warn("anonymous access is on for a listener that is not loopback only", "address", l.Address)
			}
		}
		g.log.Warn("anonymous access is allowed (auth.anonymous: true)")
	}
	if err := g.broker.Start(ctx); err != nil {
		return err
	}
	for _, a := range g.broker.Addrs() {
		g.log.Info("listening", "protocol", "mqtt", "kind", a.Kind, "address", a.Address)
	}
	if *cfg.Storage.Path == "" {
		g.log.Warn("storage is off: retained messages and sessions are lost on restart")
	} else {
		g.log.Info("storage", "path", *cfg.Storage.Path)
	}
	for i, s := range g.services {
		if err := s.Start(ctx); err != nil {
			for j := i - 1; j >= 0; j-- {
				_ = g.services[j].Shutdown(context.Background())
			}
			_ = g.broker.Shutdown(context.Background())
			return err
		}
	}
	g.logAdapterAddrs()
	g.started.Store(true)
	return nil
}

// shutdown drains the adapters (in-flight requests finish), then stops the
// broker, which flushes storage.
func (g *gateway) shutdown(ctx context.Context) error {
	g.started.Store(false)
	var errs []error
	for i := len(g.services) - 1; i >= 0; i-- {
		if err := g.services[i].Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := g.broker.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("broker: %w", err))
	}
	return errors.Join(errs...)
}

// reload re-reads the config file. An invalid file is logged with every
// problem and the running config stays. What can change live is applied;
// what needs a restart is named in the log.
func (g *gateway) reload(o Overrides) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur.file == "" {
		g.log.Warn("SIGHUP ignored: running on embedded defaults, no config file to reload")
		return
	}
	l, err := loadConfig(g.cur.file, o)
	if err != nil {
		g.log.Error("config reload rejected, keeping the running config", "file", g.cur.file, "problems", err.Error())
		return
	}
	if g.http != nil {
		if err := g.http.MountTable(l.table); err != nil {
			g.log.Error("config reload rejected, keeping the running config", "file", g.cur.file, "problems", err.Error())
			return
		}
	}
	if g.coap != nil {
		g.coap.SetTable(l.table)
	}
	if changed := restartOnly(g.cur.cfg, l.cfg); len(changed) > 0 {
		g.log.Warn("config reload: these settings need a restart and were not applied", "settings", changed)
	}
	g.cur = l
	g.log.Info("config reloaded", "file", l.file, "routes", l.table.Len())
}

// table is the mapping in force.
func (g *gateway) table() *mapping.Table {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cur.table
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
