package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	coapadapter "github.com/edgebridge/gateway/adapters/coap"
	httpadapter "github.com/edgebridge/gateway/adapters/http"
	"github.com/edgebridge/gateway/bridge/egress"
	"github.com/edgebridge/gateway/mapping"
)

// egressDir is the folder under storage.path that holds the egress queues.
const egressDir = "egress"

// addEgress builds the egress engine from the compiled routes: a webhook
// (adapters/http) or CoAP client (adapters/coap) per egress route and a
// poller or observer per source route, all run by one bridge/egress Engine
// whose durable queues live in storage.path/egress (in memory when storage
// is off). The engine is appended to g.services: it must start after the
// broker and stop before it. With no egress or source route nothing is
// added. reg receives the per-route metrics.
func (g *gateway) addEgress(l *loaded, reg prometheus.Registerer) error {
	dir := dirOf(l.file)
	log := g.log.With("component", "egress")
	cfg := egress.Config{Broker: g.broker, Registry: reg, Logger: log}
	if p := *l.cfg.Storage.Path; p != "" {
		cfg.Dir = filepath.Join(p, egressDir)
	}
	for _, r := range l.table.Routes() {
		switch {
		case r.HTTPOut != nil:
			d, err := httpadapter.EgressWebhook(r, httpadapter.EgressOptions{})
			if err != nil {
				return err
			}
			cfg.Routes = append(cfg.Routes, egress.Route{Name: r.Name, Subscribe: r.Subscribe, Delivery: r.Delivery, Deliverer: d})
		case r.CoAPOut != nil:
			key, err := egressPSKKey(dir, r.CoAPOut.PSK)
			if err != nil {
				return fmt.Errorf("routes[%d] %q: coap_out.psk: %w", r.Index, r.Name, err)
			}
			d, err := coapadapter.EgressDevice(r, coapadapter.EgressOptions{PSKKey: key, Logger: log.With("route", r.Name)})
			if err != nil {
				return err
			}
			cfg.Routes = append(cfg.Routes, egress.Route{Name: r.Name, Subscribe: r.Subscribe, Delivery: r.Delivery, Deliverer: d})
		case r.Source != nil:
			var (
				src egress.Source
				err error
			)
			if r.Source.HTTPPoll != "" {
				src, err = httpadapter.SourcePoll(r, httpadapter.EgressOptions{})
			} else {
				var key []byte
				if key, err = egressPSKKey(dir, r.Source.PSK); err != nil {
					return fmt.Errorf("routes[%d] %q: source.psk: %w", r.Index, r.Name, err)
				}
				src, err = coapadapter.SourceObserve(r, coapadapter.EgressOptions{PSKKey: key, Logger: log.With("route", r.Name)})
			}
			if err != nil {
				return err
			}
			cfg.Sources = append(cfg.Sources, egress.SourceRoute{
				Name: r.Name, Topic: r.Topic.String(), QoS: r.QoS, Retain: r.Retain, ContentType: r.ContentType, Source: src,
			})
		}
	}
	if len(cfg.Routes) == 0 && len(cfg.Sources) == 0 {
		return nil
	}
	e, err := egress.New(cfg)
	if err != nil {
		return err
	}
	g.services = append(g.services, e)
	log.Info("egress configured", "routes", len(cfg.Routes), "sources", len(cfg.Sources), "queue_dir", cfg.Dir)
	return nil
}

// egressPSKKey reads the key file of a PSK given as key_hex_file, relative
// to the config file's folder; nil when the key was given otherwise.
func egressPSKKey(dir string, psk *mapping.PSK) ([]byte, error) {
	if psk == nil || psk.KeyFile == "" {
		return nil, nil
	}
	name := psk.KeyFile
	if !filepath.IsAbs(name) && dir != "" {
		name = filepath.Join(dir, name)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("key_hex_file: %w", err)
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) == 0 {
		return nil, fmt.Errorf("key_hex_file %s: not a hex key", name)
	}
	return k, nil
}

// egressProblems checks what mapping cannot (it reads no files): the PSK
// key files of coap_out and coap_observe routes. validate should append
// its result, so that `gateway validate` reports a missing key file with
// FILE:LINE:COL.
func egressProblems(c *Config, dir string) []problemAt {
	var probs []problemAt
	for i, s := range c.Routes {
		check := func(path string, psk *mapping.PSKSpec) {
			if psk == nil || psk.KeyHexFile == "" {
				return
			}
			if _, err := egressPSKKey(dir, &mapping.PSK{KeyFile: psk.KeyHexFile}); err != nil {
				probs = append(probs, problemAt{path: fmt.Sprintf("routes[%d].%s.key_hex_file", i, path), msg: err.Error()})
			}
		}
		if s.CoAPOut != nil {
			check("coap_out.psk", s.CoAPOut.PSK)
		}
		if s.Source != nil {
			check("source.psk", s.Source.PSK)
		}
	}
	return probs
}
