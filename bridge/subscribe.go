package bridge

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Handler receives the messages of a subscription. It must not modify the
// message's slices.
type Handler func(Message)

// SubOptions shapes a subscription.
type SubOptions struct {
	// QoS is the maximum QoS of delivered messages (the QoS field of each
	// Message is lowered to it), as in an MQTT SUBSCRIBE.
	QoS byte
	// Queue is the number of messages waiting for the handler. With 0 the
	// handler runs on the publisher's goroutine and must never block; with
	// more, one goroutine per subscription runs the handler.
	Queue int
	// Block makes a full queue hold the publisher until there is room, the
	// subscription closes or BlockTimeout passes, instead of dropping the
	// message at once. Use it for at-least-once consumers (replies,
	// egress); it slows only the publishers of matching messages.
	Block bool
	// BlockTimeout bounds how long one publish waits for room; 0 means 5s.
	BlockTimeout time.Duration
	// NoRetained skips the retained messages normally delivered first.
	NoRetained bool
}

// Subscription is one active subscription; Close ends it.
type Subscription struct {
	b       *Broker
	id      int
	filter  string
	opts    SubOptions
	fn      Handler
	queue   chan Message
	done    chan struct{}
	stopped chan struct{}
	once    sync.Once
	dropped atomic.Int64

	// primed holds the retained messages delivered at subscribe time, by
	// topic, until primedUntil. mochi acknowledges (and stores as retained)
	// a client's publish before it fans it out, so a publish racing with
	// Subscribe can be seen both as retained and live: its first live copy
	// that matches (same topic, payload and creation second) is dropped.
	primedMu    sync.Mutex
	primed      map[string]packets.Packet
	primedUntil time.Time
	priming     atomic.Bool // false once nothing is primed: live deliveries skip primedMu
}

// primeWindow bounds how long a retained delivery suppresses its live twin.
const primeWindow = 2 * time.Second

// duplicateOfPrimed reports (once) whether pk is the live copy of a retained
// message this subscription already delivered.
func (s *Subscription) duplicateOfPrimed(pk packets.Packet) bool {
	if !s.priming.Load() {
		return false
	}
	s.primedMu.Lock()
	defer s.primedMu.Unlock()
	if len(s.primed) == 0 || time.Now().After(s.primedUntil) {
		s.primed = nil
		s.priming.Store(false)
		return false
	}
	r, ok := s.primed[pk.TopicName]
	if !ok || r.Created != pk.Created || !bytes.Equal(r.Payload, pk.Payload) {
		return false
	}
	delete(s.primed, pk.TopicName)
	return true
}

// Subscribe registers fn for every message matching filter. Retained
// messages matching it are delivered first (unless opts.NoRetained), with
// Retain set; later messages have Retain false, as an MQTT subscriber without
// Retain As Published sees them [MQTT-3.3.1-12]. A message published while
// Subscribe runs may arrive between the retained ones; one that is both
// retained and still being fanned out is delivered once, as retained.
func (b *Broker) Subscribe(filter string, opts SubOptions, fn Handler) (*Subscription, error) {
	s, retained, err := b.SubscribeWithRetained(filter, opts, fn)
	for _, m := range retained {
		s.deliver(m)
	}
	return s, err
}

// SubscribeWithRetained is Subscribe that returns the retained messages
// matching filter (unless opts.NoRetained) instead of passing them to fn,
// for callers that write them out themselves before the live ones. A
// retained message that is still being fanned out is not passed to fn
// again.
func (b *Broker) SubscribeWithRetained(filter string, opts SubOptions, fn Handler) (*Subscription, []Message, error) {
	if err := ValidateFilter(filter); err != nil {
		return nil, nil, err
	}
	if opts.QoS > 2 {
		return nil, nil, ErrInvalidQoS
	}
	if opts.BlockTimeout <= 0 {
		opts.BlockTimeout = 5 * time.Second
	}
	s := &Subscription{b: b, filter: filter, opts: opts, fn: fn, done: make(chan struct{}), stopped: make(chan struct{})}
	if opts.Queue > 0 {
		s.queue = make(chan Message, opts.Queue)
		go s.run()
	} else {
		close(s.stopped)
	}

	b.mu.Lock()
	if !b.Running() {
		b.mu.Unlock()
		s.Close()
		return nil, nil, ErrClosed
	}
	b.nextSub++
	s.id = b.nextSub
	b.subs[s.id] = s
	b.mu.Unlock()

	// Live handlers wait on primedMu until the retained messages are read
	// and primed, so a live twin of a retained message is always seen as
	// one. The lock is not held while delivering (a handler may publish).
	s.primedMu.Lock()
	s.priming.Store(!opts.NoRetained)
	// Inline subscriptions straight on the topic index: no hooks run, so the
	// storage hook never records the gateway's own subscriptions.
	b.srv.Topics.InlineSubscribe(mqtt.InlineSubscription{
		Subscription: packets.Subscription{Filter: filter, Identifier: s.id, Qos: opts.QoS},
		Handler: func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
			if s.duplicateOfPrimed(pk) {
				return
			}
			m := fromPacket(pk, time.Now())
			m.Retain = false
			s.deliver(m)
		},
	})
	var retained []packets.Packet
	if !opts.NoRetained {
		retained = b.srv.Topics.Messages(filter)
		if len(retained) > 0 {
			s.primed = make(map[string]packets.Packet, len(retained))
			for _, pk := range retained {
				s.primed[pk.TopicName] = pk
			}
			s.primedUntil = time.Now().Add(primeWindow)
		}
	}
	s.priming.Store(len(s.primed) > 0)
	s.primedMu.Unlock()
	out := make([]Message, len(retained))
	for i, pk := range retained {
		out[i] = fromPacket(pk, time.Now())
		out[i].Retain = true
		out[i].QoS = min(out[i].QoS, opts.QoS)
	}
	return s, out, nil
}

// deliver passes one message to the handler or its queue.
func (s *Subscription) deliver(m Message) {
	if m.QoS > s.opts.QoS {
		m.QoS = s.opts.QoS
	}
	select {
	case <-s.done:
		return
	default:
	}
	if s.queue == nil {
		s.fn(m)
		return
	}
	select {
	case s.queue <- m:
		return
	default:
	}
	if !s.opts.Block {
		s.dropped.Add(1)
		return
	}
	t := time.NewTimer(s.opts.BlockTimeout)
	defer t.Stop()
	select {
	case s.queue <- m:
	case <-s.done:
	case <-t.C:
		s.dropped.Add(1)
	}
}

func (s *Subscription) run() {
	defer close(s.stopped)
	for {
		select {
		case <-s.done:
			return
		case m := <-s.queue:
			s.fn(m)
		}
	}
}

// Filter is the subscription's topic filter.
func (s *Subscription) Filter() string { return s.filter }

// Dropped counts messages lost to a full queue.
func (s *Subscription) Dropped() int64 { return s.dropped.Load() }

// Close removes the subscription from the broker and waits for a running
// handler call to return. Messages still queued are discarded. It is
// idempotent and must not be called from inside the handler itself (use
// CloseAsync there).
func (s *Subscription) Close() {
	s.CloseAsync()
	<-s.stopped
}

// CloseAsync is Close without waiting for the handler goroutine to end.
func (s *Subscription) CloseAsync() {
	s.once.Do(func() {
		close(s.done)
		if s.id == 0 {
			return
		}
		s.b.srv.Topics.InlineUnsubscribe(s.id, s.filter)
		s.b.mu.Lock()
		delete(s.b.subs, s.id)
		s.b.mu.Unlock()
	})
}

// Wait blocks until the handler goroutine has ended after Close or CloseAsync,
// or ctx ends.
func (s *Subscription) Wait(ctx context.Context) error {
	select {
	case <-s.stopped:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
