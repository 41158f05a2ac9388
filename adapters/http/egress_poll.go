package httpadapter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/edgebridge/gateway/bridge/egress"
	"github.com/edgebridge/gateway/mapping"
)

// sourcePoller is an http_poll source: it GETs a URL every interval and
// emits the body when it changed.
type sourcePoller struct {
	url      string
	interval time.Duration
	opts     EgressOptions
	client   *http.Client

	// What was last emitted survives Run calls, so a source run again
	// after a failure does not publish an unchanged body.
	mu       sync.Mutex
	etag     string
	lastBody []byte
	seen     bool
}

// SourcePoll returns the [egress.Source] of an http_poll route. Each poll
// sends If-None-Match with the last ETag; a 304, or a 200 whose body equals
// the last one, publishes nothing; a changed body is published. A failed
// poll (connection error, timeout, an answer other than 200 or 304) ends
// Run with an error, and the engine runs the source again after its
// backoff.
func SourcePoll(r *mapping.Route, opts EgressOptions) (egress.Source, error) {
	if r == nil || r.Source == nil || r.Source.HTTPPoll == "" {
		return nil, errors.New("http egress: route has no source.http_poll")
	}
	iv := r.Source.Interval
	if iv <= 0 {
		iv = mapping.DefaultPollInterval
	}
	return &sourcePoller{url: r.Source.HTTPPoll, interval: iv, opts: opts, client: opts.client(1)}, nil
}

// Run implements [egress.Source].
func (p *sourcePoller) Run(ctx context.Context, emit func(egress.Sample)) error {
	defer p.client.CloseIdleConnections()
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		if err := p.poll(ctx, emit); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (p *sourcePoller) poll(ctx context.Context, emit func(egress.Sample)) error {
	// One poll may take at most the interval (and at least a second).
	pctx, cancel := context.WithTimeout(ctx, max(p.interval, time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(pctx, http.MethodGet, p.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", p.opts.userAgent())
	p.mu.Lock()
	if p.etag != "" {
		req.Header.Set("If-None-Match", p.etag)
	}
	p.mu.Unlock()
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return nil
	case http.StatusOK:
	default:
		return fmt.Errorf("GET %s: %s", p.url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, p.opts.maxResponse()+1))
	if err != nil {
		return fmt.Errorf("GET %s: reading the body: %w", p.url, err)
	}
	if int64(len(body)) > p.opts.maxResponse() {
		return fmt.Errorf("GET %s: body longer than %d bytes", p.url, p.opts.maxResponse())
	}
	p.mu.Lock()
	changed := !p.seen || !bytes.Equal(body, p.lastBody)
	p.etag, p.lastBody, p.seen = resp.Header.Get("ETag"), body, true
	p.mu.Unlock()
	if changed {
		emit(egress.Sample{Payload: body, ContentType: resp.Header.Get("Content-Type")})
	}
	return nil
}
