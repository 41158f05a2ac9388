package bridge

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
)

// ErrNoReply means a request's context ended before its reply arrived (504/5.04).
var ErrNoReply = errors.New("no reply before the timeout")

// replyPrefix roots the per-request reply topics. '$' keeps them out of
// every '#' and '+/…' subscription [MQTT-4.7.2-1], so replies never leak to
// ordinary subscribers, and mochi still lets clients publish there.
const replyPrefix = "$gateway/reply/"

// requests routes replies to the requests waiting for them.
type requests struct {
	once     sync.Once
	instance string // this process's level under replyPrefix
	err      error
	shared   *Subscription // replyPrefix+instance+"/+"

	mu      sync.Mutex
	pending map[string]*waiter          // by request id
	topics  map[string]*topicSubscriber // explicit reply topics, ref-counted

	late atomic.Int64
}

type waiter struct {
	id    string
	reply chan Message // buffered 1: the first reply wins
}

// topicSubscriber is one subscription to an explicit reply topic shared by
// every request waiting on it, oldest first.
type topicSubscriber struct {
	sub     *Subscription
	waiters []*waiter
}

// Request publishes m as a request and returns the first reply, MQTT 5
// request/response style: m goes out with a Response Topic and Correlation
// Data. With replyTopic empty, each request gets its own reply topic under
// "$gateway/reply/"; otherwise replies are taken from replyTopic (for MQTT
// 3.1.1 devices that answer on a fixed topic), matched by correlation data
// when the reply carries it and oldest request first when it does not.
// Request ends with ErrNoReply (wrapping ctx's error) when ctx ends first.
func (b *Broker) Request(ctx context.Context, m Message, replyTopic string) (Message, error) {
	rq := &b.requests
	rq.once.Do(func() { rq.err = b.startReplies() })
	if rq.err != nil {
		return Message{}, rq.err
	}
	id := newID()
	w := &waiter{id: id, reply: make(chan Message, 1)}
	if replyTopic == "" {
		m.ResponseTopic = replyPrefix + rq.instance + "/" + id
		rq.mu.Lock()
		rq.pending[id] = w
		rq.mu.Unlock()
		defer func() {
			rq.mu.Lock()
			delete(rq.pending, id)
			rq.mu.Unlock()
		}()
	} else {
		if err := ValidateTopic(replyTopic); err != nil {
			return Message{}, fmt.Errorf("reply topic: %w", err)
		}
		m.ResponseTopic = replyTopic
		if err := b.waitOnTopic(replyTopic, w); err != nil {
			return Message{}, err
		}
		defer b.stopWaiting(replyTopic, w)
	}
	m.CorrelationData = []byte(id)
	if err := b.Publish(ctx, m); err != nil {
		return Message{}, err
	}
	select {
	case r := <-w.reply:
		return r, nil
	case <-ctx.Done():
		return Message{}, fmt.Errorf("%w: %w", ErrNoReply, ctx.Err())
	}
}

// LateReplies counts replies that arrived for no waiting request (after
// their timeout, or never asked for).
func (b *Broker) LateReplies() int64 { return b.requests.late.Load() }

func (b *Broker) startReplies() error {
	rq := &b.requests
	rq.instance = newID()[:12]
	rq.pending = map[string]*waiter{}
	rq.topics = map[string]*topicSubscriber{}
	// Queue 0: the handler only hands the reply to a buffered channel, on
	// the publisher's goroutine, so no reply can be dropped by a full queue.
	sub, err := b.Subscribe(replyPrefix+rq.instance+"/+", SubOptions{QoS: 1, NoRetained: true}, func(m Message) {
		id := m.Topic[strings.LastIndexByte(m.Topic, '/')+1:]
		rq.mu.Lock()
		w := rq.pending[id]
		rq.mu.Unlock()
		if w == nil || !w.offer(m) {
			rq.late.Add(1)
		}
	})
	if err != nil {
		return err
	}
	rq.shared = sub
	return nil
}

// offer hands m to the waiter unless it already has its reply.
func (w *waiter) offer(m Message) bool {
	select {
	case w.reply <- m:
		return true
	default:
		return false
	}
}

func (b *Broker) waitOnTopic(topic string, w *waiter) error {
	rq := &b.requests
	rq.mu.Lock()
	defer rq.mu.Unlock()
	if ts := rq.topics[topic]; ts != nil {
		ts.waiters = append(ts.waiters, w)
		return nil
	}
	ts := &topicSubscriber{waiters: []*waiter{w}}
	sub, err := b.Subscribe(topic, SubOptions{QoS: 1, NoRetained: true}, func(m Message) {
		rq.mu.Lock()
		var chosen *waiter
		for i, cand := range ts.waiters {
			if len(m.CorrelationData) == 0 || bytes.Equal(m.CorrelationData, []byte(cand.id)) {
				chosen = cand
				ts.waiters = append(ts.waiters[:i:i], ts.waiters[i+1:]...)
				break
			}
		}
		rq.mu.Unlock()
		if chosen == nil || !chosen.offer(m) {
			rq.late.Add(1)
		}
	})
	if err != nil {
		return err
	}
	ts.sub = sub
	rq.topics[topic] = ts
	return nil
}

func (b *Broker) stopWaiting(topic string, w *waiter) {
	rq := &b.requests
	rq.mu.Lock()
	ts := rq.topics[topic]
	if ts == nil {
		rq.mu.Unlock()
		return
	}
	for i, cand := range ts.waiters {
		if cand == w {
			ts.waiters = append(ts.waiters[:i:i], ts.waiters[i+1:]...)
			break
		}
	}
	var done *Subscription
	if len(ts.waiters) == 0 {
		delete(rq.topics, topic)
		done = ts.sub
	}
	rq.mu.Unlock()
	if done != nil {
		done.CloseAsync() // Queue 0: no goroutine to wait for
	}
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
