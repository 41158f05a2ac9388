package coapadapter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/edgebridge/gateway/bridge/egress"
	"github.com/edgebridge/gateway/mapping"
)

// sourceDefaultMaxAge is the freshness of a notification without a Max-Age
// option (RFC 7252 §5.10.5).
const sourceDefaultMaxAge = 60 * time.Second

// sourceObserver is a coap_observe source.
type sourceObserver struct {
	u    *url.URL
	dial *egressDialer
}

// SourceObserve returns the [egress.Source] of a coap_observe route. Run
// registers an observation (RFC 7641) on the URL and emits every 2.xx
// notification. It ends with an error, so that the engine registers again
// after its backoff, when the device answers with an error code or without
// Observe, when the connection fails, or when no notification arrives
// within the last one's Max-Age (plus half of it, at least 2 s): RFC 7641
// §3.3.1 lets a client re-register once its notification is no longer
// fresh, and that is how a device that restarted (and forgot its
// observers) is found again. Re-registering yields the current value,
// which is published again.
func SourceObserve(r *mapping.Route, opts EgressOptions) (egress.Source, error) {
	if r == nil || r.Source == nil || r.Source.CoAPObserve == "" {
		return nil, errors.New("coap egress: route has no source.coap_observe")
	}
	u, err := url.Parse(r.Source.CoAPObserve)
	if err != nil {
		return nil, err
	}
	d, err := newEgressDialer(r.Source.PSK, opts, 1)
	if err != nil {
		return nil, err
	}
	return &sourceObserver{u: u, dial: d}, nil
}

type sourceNote struct {
	maxAge time.Duration
	err    error
}

// Run implements [egress.Source].
func (o *sourceObserver) Run(ctx context.Context, emit func(egress.Sample)) error {
	c, err := o.dial.dial(ctx, o.u.Scheme, egressHostPort(o.u))
	if err != nil {
		return err
	}
	defer c.close()
	notes := make(chan sourceNote, 1)
	signal := func(n sourceNote) {
		select {
		case notes <- n:
		default: // one pending signal is enough: a newer one replaces nothing
			if n.err != nil {
				select {
				case <-notes:
				default:
				}
				select {
				case notes <- n:
				default:
				}
			}
		}
	}
	handler := func(m *pool.Message) {
		code := egressCode(m.Code())
		if uint8(m.Code())>>5 != 2 {
			signal(sourceNote{err: fmt.Errorf("observe %s: device answered %s", o.u, code)})
			return
		}
		body, _ := m.ReadBody()
		s := egress.Sample{Payload: bytes.Clone(body)}
		if cf, err := m.ContentFormat(); err == nil {
			s.ContentType, _ = contentTypeOf(cf)
		}
		maxAge := sourceDefaultMaxAge
		if v, err := m.Options().GetUint32(message.MaxAge); err == nil {
			maxAge = time.Duration(v) * time.Second
		}
		emit(s)
		if _, err := m.Observe(); err != nil {
			signal(sourceNote{err: fmt.Errorf("observe %s: the device does not support Observe (answer without the option)", o.u)})
			return
		}
		signal(sourceNote{maxAge: maxAge})
	}
	var qs []message.Option
	if o.u.RawQuery != "" {
		req := c.cc.AcquireMessage(ctx)
		for _, q := range splitQuery(o.u.RawQuery) {
			req.AddQuery(q)
		}
		for _, opt := range req.Options() {
			qs = append(qs, opt)
		}
		c.cc.ReleaseMessage(req)
	}
	path := o.u.Path
	if path == "" {
		path = "/"
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	obs, err := c.cc.Observe(rctx, path, handler, qs...)
	cancel()
	if err != nil {
		return fmt.Errorf("observe %s: %w", o.u, err)
	}
	defer func() {
		// Deregister politely (RFC 7641 §3.6); the device may be gone.
		cctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_ = obs.Cancel(cctx)
	}()
	wait := sourceDefaultMaxAge
	timer := time.NewTimer(sourceFreshness(wait))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.cc.Done():
			return fmt.Errorf("observe %s: connection closed", o.u)
		case n := <-notes:
			if n.err != nil {
				return n.err
			}
			wait = n.maxAge
			timer.Reset(sourceFreshness(wait))
		case <-timer.C:
			return fmt.Errorf("observe %s: no notification within %s (Max-Age %s): registering again", o.u, sourceFreshness(wait), wait)
		}
	}
}

// sourceFreshness is how long to wait for the next notification.
func sourceFreshness(maxAge time.Duration) time.Duration {
	return maxAge + max(maxAge/2, 2*time.Second)
}

func splitQuery(raw string) []string {
	var out []string
	for _, q := range bytes.Split([]byte(raw), []byte("&")) {
		if len(q) == 0 {
			continue
		}
		s := string(q)
		if uq, err := url.QueryUnescape(s); err == nil {
			s = uq
		}
		out = append(out, s)
	}
	return out
}
