package egress

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/edgebridge/gateway/bridge"
)

// Sample is one reading of a source: a notification or a changed poll
// result.
type Sample struct {
	// Payload is the body, owned by the Sample.
	Payload []byte
	// ContentType is the media type the endpoint gave, "" if none.
	ContentType string
}

// Source produces samples: an observation of a CoAP resource or the
// polling of an HTTP URL. Run works until ctx ends (then it returns
// ctx's error) or the source fails (connection lost, observation
// refused, ...), calling emit for each sample; emit publishes it and may
// be called from any goroutine while Run runs. The engine runs Run again
// after a failure, with backoff.
type Source interface {
	Run(ctx context.Context, emit func(Sample)) error
}

// SourceRoute is one source route of the engine.
type SourceRoute struct {
	// Name is the route's name.
	Name string
	// Topic is where samples are published.
	Topic string
	// QoS of the publishes.
	QoS byte
	// Retain marks the publishes retained (the last reading stays
	// readable).
	Retain bool
	// ContentType overrides the endpoint's content type when set.
	ContentType string
	// Source produces the samples.
	Source Source
	// BackoffMin and BackoffMax bound the wait before running a failed
	// source again (doubling, with jitter); 0 means 1s and 1m.
	BackoffMin, BackoffMax time.Duration
}

type sourceRun struct {
	e         *Engine
	cfg       SourceRoute
	log       *slog.Logger
	published atomic.Uint64
	failures  atomic.Uint64
}

// run keeps the source running until ctx ends.
func (s *sourceRun) run(ctx context.Context) {
	lo, hi := s.cfg.BackoffMin, s.cfg.BackoffMax
	if lo <= 0 {
		lo = time.Second
	}
	if hi < lo {
		hi = max(lo, time.Minute)
	}
	wait := lo
	for ctx.Err() == nil {
		var got atomic.Bool
		err := s.cfg.Source.Run(ctx, func(sm Sample) {
			got.Store(true)
			s.publish(ctx, sm)
		})
		if ctx.Err() != nil {
			return
		}
		s.failures.Add(1)
		if got.Load() {
			wait = lo // it worked for a while: start the backoff over
		}
		d := time.Duration(float64(wait) * (1 - 0.2*rand.Float64()))
		s.log.Warn("source failed, running it again after a pause", "error", err, "retry_in", d.Round(time.Millisecond))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(wait*2, hi)
	}
}

func (s *sourceRun) publish(ctx context.Context, sm Sample) {
	ct := s.cfg.ContentType
	if ct == "" {
		ct = sm.ContentType
	}
	err := s.e.cfg.Broker.Publish(ctx, bridge.Message{
		Topic: s.cfg.Topic, Payload: sm.Payload, QoS: s.cfg.QoS, Retain: s.cfg.Retain, ContentType: ct,
	})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("source could not publish", "topic", s.cfg.Topic, "error", err)
		}
		return
	}
	s.published.Add(1)
}

// SourceStats counts a source route's publishes and failures.
type SourceStats struct {
	// Published counts samples published.
	Published uint64
	// Failures counts the times the source stopped with an error.
	Failures uint64
}

// SourceStats returns the counters of the named source route.
func (e *Engine) SourceStats(route string) (SourceStats, bool) {
	for _, s := range e.sources {
		if s.cfg.Name == route {
			return SourceStats{Published: s.published.Load(), Failures: s.failures.Load()}, true
		}
	}
	return SourceStats{}, false
}
