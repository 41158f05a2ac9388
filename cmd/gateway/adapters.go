package main

import (
	"errors"
	"path/filepath"
	"reflect"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	coapadapter "github.com/edgebridge/gateway/adapters/coap"
	httpadapter "github.com/edgebridge/gateway/adapters/http"
	"github.com/edgebridge/gateway/mapping"
)

// addAdapters builds the HTTP and CoAP adapters from the config. They share
// one Prometheus registry, served by the HTTP adapter at /metrics.
func (g *gateway) addAdapters(l *loaded) error {
	cfg := l.cfg
	dir := dirOf(l.file)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := registerBrokerMetrics(reg, g.broker); err != nil {
		return err
	}

	coapCfg := coapadapter.Config{
		MaxPayload:     int(cfg.Limits.MaxPayload),
		MaxObservers:   cfg.Limits.MaxObservers,
		AllowAnonymous: *cfg.Auth.Anonymous,
		Registry:       reg,
		Logger:         g.log.With("adapter", "coap"),
	}
	if cfg.CoAP.UDP != nil {
		coapCfg.UDP = cfg.CoAP.UDP.Address
	}
	if d := cfg.CoAP.DTLS; d != nil {
		dc := &coapadapter.DTLSConfig{Address: d.Address, PSK: map[string][]byte{}}
		if d.Cert != "" {
			cert, err := loadDTLSCert(dir, d)
			if err != nil {
				return err
			}
			dc.Certificates = append(dc.Certificates, cert)
		}
		if d.ClientCA != "" {
			pool, err := loadPool(resolve(dir, d.ClientCA))
			if err != nil {
				return err
			}
			dc.ClientCAs = pool
		}
		for _, p := range d.PSK {
			k, err := p.key(dir)
			if err != nil {
				return err
			}
			dc.PSK[p.Identity] = k
		}
		coapCfg.DTLS = dc
	}
	if t := cfg.CoAP.TCP; t != nil {
		tc := &coapadapter.TCPConfig{Address: t.Address}
		if t.TLS != nil {
			tlsCfg, err := loadTLS(dir, t.TLS)
			if err != nil {
				return err
			}
			tc.TLS = tlsCfg
		}
		coapCfg.TCP = tc
	}
	if coapCfg.UDP != "" || coapCfg.DTLS != nil || coapCfg.TCP != nil {
		c, err := coapadapter.New(coapCfg, g.broker)
		if err != nil {
			return err
		}
		c.SetTable(l.table)
		g.coap = c
		g.services = append(g.services, c)
	}

	if err := g.addEgress(l, reg); err != nil {
		return err
	}

	if *cfg.HTTP.Address != "" {
		httpCfg := httpadapter.Config{
			Address:       *cfg.HTTP.Address,
			CORSOrigins:   cfg.HTTP.CORS.Origins,
			MaxPayload:    int64(cfg.Limits.MaxPayload),
			RatePerClient: cfg.Limits.HTTPRPSPerClient,
			MaxSSEStreams: cfg.Limits.MaxSSEStreams,
			Generic:       *cfg.HTTP.Generic,
			Ready:         g.ready,
			Routes:        func() any { return g.table().Describe() },
			Registry:      reg,
			Logger:        g.log.With("adapter", "http"),
		}
		if cfg.HTTP.TLS != nil {
			tlsCfg, err := loadTLS(dir, cfg.HTTP.TLS)
			if err != nil {
				return err
			}
			httpCfg.TLS = tlsCfg
		}
		h, err := httpadapter.New(httpCfg, g.broker)
		if err != nil {
			return err
		}
		if err := h.MountTable(l.table); err != nil {
			return err
		}
		g.http = h
		g.services = append(g.services, h) // last: /readyz answers once all else is up
	}
	return nil
}

// ready is /readyz: the broker (with its storage) and every adapter run.
func (g *gateway) ready() error {
	if !g.broker.Running() {
		return errors.New("mqtt broker is not running")
	}
	if !g.started.Load() {
		return errors.New("gateway is starting")
	}
	return nil
}

// logAdapterAddrs logs the bound address of every adapter listener.
func (g *gateway) logAdapterAddrs() {
	if g.coap != nil {
		udp, dtls, tcp := g.coap.Addrs()
		for kind, a := range map[string]string{"udp": udp, "dtls": dtls, "tcp": tcp} {
			if a != "" {
				g.log.Info("listening", "protocol", "coap", "kind", kind, "address", a)
			}
		}
	}
	if g.http != nil {
		kind := "http"
		if g.cur.cfg.HTTP.TLS != nil {
			kind = "https"
		}
		g.log.Info("listening", "protocol", "http", "kind", kind, "address", g.http.Addr())
	}
}

// restartOnly names the settings that differ between a and b and cannot be
// applied to a running gateway (listeners and storage).
func restartOnly(a, b *Config) []string {
	var out []string
	for name, pair := range map[string][2]any{
		"mqtt.listeners":             {a.MQTT.Listeners, b.MQTT.Listeners},
		"http":                       {a.HTTP, b.HTTP},
		"coap":                       {a.CoAP, b.CoAP},
		"storage.path":               {a.Storage.Path, b.Storage.Path},
		"auth.anonymous":             {a.Auth.Anonymous, b.Auth.Anonymous},
		"limits":                     {a.Limits, b.Limits},
		"log":                        {a.Log, b.Log},
		"routes (egress and source)": {egressRoutes(a), egressRoutes(b)},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			out = append(out, name)
		}
	}
	return out
}

func dirOf(file string) string {
	if file == "" {
		return ""
	}
	return filepath.Dir(file)
}

// egressRoutes are the routes that only a restart applies.
func egressRoutes(c *Config) []mapping.RouteSpec {
	var out []mapping.RouteSpec
	for _, r := range c.Routes {
		if r.Subscribe != "" || r.Source != nil {
			out = append(out, r)
		}
	}
	return out
}
