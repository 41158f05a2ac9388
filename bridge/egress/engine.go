package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/bridge/queue"
	"github.com/edgebridge/gateway/mapping"
)

// Delivery is one message for a [Deliverer].
type Delivery struct {
	// Route is the route's name, for logs.
	Route string
	// Message is the MQTT message as the broker received it (Time is the
	// receive time). Its slices must not be kept after Deliver returns.
	Message bridge.Message
	// Vars are the variables the route's subscribe template captured from
	// the topic; they fill the URL and headers.
	Vars mapping.Vars
	// Attempt counts earlier failed attempts (0 on the first).
	Attempt int
	// ID identifies the message within its route's queue, across restarts
	// too; with Route it makes an idempotency key for endpoints that want
	// to drop the duplicates at-least-once delivery may bring.
	ID uint64
}

// Response is an endpoint's answer.
type Response struct {
	// Status is the HTTP status code ("204") or CoAP code ("2.05").
	Status string
	// ContentType is the answer's media type, "" if none.
	ContentType string
	// Payload is the answer's body, owned by the Response.
	Payload []byte
}

// Deliverer sends messages of one route to its endpoint. Deliver must
// honour ctx (the engine sets the route's timeout on it) and return:
// nil and the answer on success (2xx / 2.xx); an error marked
// [ErrPermanent] (e.g. a non-retryable [*StatusError]) when retrying is
// pointless; any other error to retry. It is called from several
// goroutines at once. A Deliverer with a Close() method is closed by the
// engine's Shutdown, after the last delivery.
type Deliverer interface {
	Deliver(ctx context.Context, d *Delivery) (Response, error)
}

// DelivererFunc adapts a function to [Deliverer].
type DelivererFunc func(ctx context.Context, d *Delivery) (Response, error)

// Deliver calls f.
func (f DelivererFunc) Deliver(ctx context.Context, d *Delivery) (Response, error) { return f(ctx, d) }

// Route is one egress route of the engine.
type Route struct {
	// Name is the route's name; it names the durable queue too, so it
	// must stay the same across restarts for queued messages to be found.
	Name string
	// Subscribe is the route's topic template; the engine subscribes to
	// its Filter.
	Subscribe *mapping.Template
	// Delivery is the route's policy (timeout, concurrency, order,
	// retries, queue bounds), as compiled by mapping.
	Delivery mapping.Delivery
	// Deliverer sends the messages.
	Deliverer Deliverer
}

// Config is everything an [Engine] needs.
type Config struct {
	// Broker is where routes subscribe and sources and replies publish.
	Broker *bridge.Broker
	// Dir holds the durable queues (one pebble store for all routes);
	// "" keeps them in memory (nothing survives a restart).
	Dir string
	// Routes are the egress routes.
	Routes []Route
	// Sources are the source routes.
	Sources []SourceRoute
	// Registry receives the metrics; nil means none.
	Registry prometheus.Registerer
	// Logger receives the engine's logs; nil discards them.
	Logger *slog.Logger
	// PutTimeout bounds the wait of one message for room in the queue's
	// commit pipeline while the broker fans it out; 0 means 5s.
	PutTimeout time.Duration
}

// Validate reports every problem with cfg at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Broker == nil {
		errs = append(errs, errors.New("egress: Broker is required"))
	}
	seen := map[string]bool{}
	for i, r := range c.Routes {
		switch {
		case r.Name == "":
			errs = append(errs, fmt.Errorf("egress: routes[%d]: Name is required", i))
		case seen[r.Name]:
			errs = append(errs, fmt.Errorf("egress: routes[%d]: duplicate name %q", i, r.Name))
		}
		seen[r.Name] = true
		if r.Subscribe == nil || r.Subscribe.Kind() != mapping.TopicKind {
			errs = append(errs, fmt.Errorf("egress: route %q: Subscribe must be a topic template", r.Name))
		}
		if r.Deliverer == nil {
			errs = append(errs, fmt.Errorf("egress: route %q: Deliverer is required", r.Name))
		}
	}
	for i, s := range c.Sources {
		if s.Name == "" || s.Source == nil || s.Topic == "" {
			errs = append(errs, fmt.Errorf("egress: sources[%d]: Name, Topic and Source are required", i))
		}
	}
	return errors.Join(errs...)
}

// RouteStats is a snapshot of one egress route.
type RouteStats struct {
	queue.Stats
	// Expired counts messages dropped because their MQTT 5 expiry passed
	// while they waited.
	Expired uint64
	// Replies counts answers published to a Response Topic.
	Replies uint64
}

const (
	stateNew int32 = iota
	stateRunning
	stateStopped
)

// Engine runs the egress and source routes. Create it with [New], then
// Start after the broker has started; Shutdown before the broker stops.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	routes  []*route
	sources []*sourceRun
	met     *metrics

	state    atomic.Int32
	store    *queue.Store
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
}

// New checks cfg and registers the metrics; nothing runs until Start.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PutTimeout <= 0 {
		cfg.PutTimeout = 5 * time.Second
	}
	e := &Engine{cfg: cfg, log: cfg.Logger}
	for _, rc := range cfg.Routes {
		e.routes = append(e.routes, &route{e: e, cfg: rc, log: e.log.With("route", rc.Name)})
	}
	for _, sc := range cfg.Sources {
		e.sources = append(e.sources, &sourceRun{e: e, cfg: sc, log: e.log.With("route", sc.Name)})
	}
	e.met = newMetrics(e)
	if cfg.Registry != nil {
		if err := e.met.register(cfg.Registry); err != nil {
			return nil, fmt.Errorf("egress metrics: %w", err)
		}
	}
	return e, nil
}

// Start opens the queues (recovering what a previous run left), subscribes
// every route and starts the workers and sources. The broker must be
// running. On error nothing is left running.
func (e *Engine) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !e.state.CompareAndSwap(stateNew, stateRunning) {
		return errors.New("egress: Start called twice or after Shutdown")
	}
	if len(e.routes) == 0 && len(e.sources) == 0 {
		return nil
	}
	st, err := queue.OpenStore(e.cfg.Dir, e.log.With("component", "egress-queue"))
	if err != nil {
		e.state.Store(stateStopped)
		return err
	}
	e.store = st
	runCtx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	for _, r := range e.routes {
		if err := r.open(st); err != nil {
			e.state.Store(stateStopped)
			e.stop()
			return err
		}
	}
	for _, r := range e.routes {
		for range r.cfg.Delivery.MaxInFlight {
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				r.work(runCtx)
			}()
		}
		if n := r.q.Stats().Depth; n > 0 {
			r.log.Info("egress queue recovered", "messages", n)
		}
	}
	for _, s := range e.sources {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			s.run(runCtx)
		}()
	}
	return nil
}

// Shutdown stops taking messages from the broker, lets the puts under way
// finish, ends the workers (a delivery cut short stays queued and is sent
// again after a restart) and sources, and closes the queues. It is
// idempotent; ctx bounds the wait for the goroutines.
func (e *Engine) Shutdown(ctx context.Context) error {
	if e.state.Swap(stateStopped) != stateRunning {
		return nil
	}
	done := make(chan struct{})
	go func() {
		e.stop()
		close(done)
	}()
	select {
	case <-done:
		return e.stopErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *Engine) stop() {
	e.stopOnce.Do(func() {
		for _, r := range e.routes {
			r.closeSub()
		}
		if e.cancel != nil {
			e.cancel()
		}
		e.wg.Wait()
		for _, r := range e.routes {
			if c, ok := r.cfg.Deliverer.(interface{ Close() }); ok {
				c.Close()
			}
		}
		if e.store != nil {
			e.stopErr = e.store.Close()
		}
	})
}

// Stats returns a snapshot of the named egress route.
func (e *Engine) Stats(route string) (RouteStats, bool) {
	for _, r := range e.routes {
		if r.cfg.Name == route {
			return r.stats(), true
		}
	}
	return RouteStats{}, false
}

// route is one running egress route.
type route struct {
	e   *Engine
	cfg Route
	log *slog.Logger
	q   *queue.Queue
	sub *bridge.Subscription

	// gate lets Shutdown wait for handlers still putting after the
	// subscription is closed (with Queue 0 they run on publishers'
	// goroutines, which Subscription.Close does not wait for).
	gate   sync.RWMutex
	closed bool

	expired, replies, unmatched atomic.Uint64
	lastFullLog                 atomic.Int64
}

func (r *route) open(st *queue.Store) error {
	d := r.cfg.Delivery
	overflow := queue.DropOldest
	if d.Overflow == mapping.OverflowRefuseNew {
		overflow = queue.RefuseNew
	}
	maxItems, maxBytes := d.QueueMaxItems, d.QueueMaxBytes
	if maxItems == 0 {
		maxItems = mapping.DefaultQueueMaxItems
	}
	if maxBytes == 0 {
		maxBytes = mapping.DefaultQueueMaxBytes
	}
	if r.cfg.Delivery.MaxInFlight <= 0 {
		r.cfg.Delivery.MaxInFlight = 1
	}
	if r.cfg.Delivery.Timeout <= 0 {
		r.cfg.Delivery.Timeout = mapping.DefaultEgressTimeout
	}
	q, err := st.Queue(r.cfg.Name, queue.Options{
		MaxItems:    maxItems,
		MaxBytes:    maxBytes,
		Overflow:    overflow,
		Backoff:     queue.Backoff{Initial: d.BackoffMin, Max: d.BackoffMax, Multiplier: 2, Jitter: 0.2},
		MaxAttempts: d.MaxAttempts,
		Ordered:     d.Ordered,
		MaxInFlight: r.cfg.Delivery.MaxInFlight,
	})
	if err != nil {
		return fmt.Errorf("egress route %q: %w", r.cfg.Name, err)
	}
	r.q = q
	// QoS 1: the broker acknowledges a QoS ≥ 1 publish only after this
	// handler has returned, and it returns only once the message is on disk.
	sub, err := r.e.cfg.Broker.Subscribe(r.cfg.Subscribe.Filter(), bridge.SubOptions{QoS: 1, NoRetained: true}, r.handle)
	if err != nil {
		return fmt.Errorf("egress route %q: subscribe %s: %w", r.cfg.Name, r.cfg.Subscribe.Filter(), err)
	}
	r.sub = sub
	return nil
}

func (r *route) closeSub() {
	if r.sub != nil {
		r.sub.Close()
	}
	r.gate.Lock()
	r.closed = true
	r.gate.Unlock()
}

// handle runs on the publisher's goroutine during the broker's fan-out.
func (r *route) handle(m bridge.Message) {
	var vars mapping.Vars
	if !r.cfg.Subscribe.Match(m.Topic, &vars) {
		// The filter is wider than the template ("a/#" also matches "a").
		r.unmatched.Add(1)
		return
	}
	rec := encodeRecord(&m, &vars)
	r.gate.RLock()
	defer r.gate.RUnlock()
	if r.closed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.e.cfg.PutTimeout)
	err := r.q.Put(ctx, rec)
	cancel()
	switch {
	case err == nil:
	case errors.Is(err, queue.ErrFull), errors.Is(err, queue.ErrTooLarge):
		// Counted by the queue (Refused); log at most every 10 s.
		now := time.Now().UnixNano()
		if last := r.lastFullLog.Load(); now-last > int64(10*time.Second) && r.lastFullLog.CompareAndSwap(last, now) {
			r.log.Warn("egress queue refused a message", "topic", m.Topic, "error", err, "refused_total", r.q.Stats().Refused)
		}
	default:
		r.log.Error("egress queue put failed: message lost", "topic", m.Topic, "error", err)
	}
}

// work delivers until ctx ends or the queue closes.
func (r *route) work(ctx context.Context) {
	for {
		it, err := r.q.Next(ctx)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, queue.ErrClosed) {
				r.log.Error("egress queue read failed", "error", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				continue
			}
			return
		}
		r.deliver(ctx, it)
	}
}

func (r *route) deliver(ctx context.Context, it queue.Item) {
	m, vars, err := decodeRecord(it.Payload)
	if err != nil {
		r.log.Error("dropping unreadable queued message", "id", it.ID, "error", err)
		r.settle(r.q.Fail(it.ID))
		return
	}
	if m.Expiry > 0 && time.Since(m.Time) > m.Expiry {
		r.expired.Add(1)
		r.log.Debug("message expired in the queue", "topic", m.Topic)
		r.settle(r.q.Fail(it.ID))
		return
	}
	d := &Delivery{Route: r.cfg.Name, Message: m, Vars: vars, Attempt: it.Attempts, ID: it.ID}
	actx, cancel := context.WithTimeout(ctx, r.cfg.Delivery.Timeout)
	resp, err := r.cfg.Deliverer.Deliver(actx, d)
	cancel()
	switch {
	case err == nil:
		r.settle(r.q.Ack(it.ID))
		r.e.met.latency.WithLabelValues(r.cfg.Name).Observe(time.Since(m.Time).Seconds())
		r.reply(ctx, &m, resp)
	case ctx.Err() != nil:
		// Shutting down: the item stays stored and comes back after a
		// restart.
	case IsPermanent(err):
		r.log.Warn("egress delivery failed permanently, not retried", "topic", m.Topic, "error", err)
		r.settle(r.q.Fail(it.ID))
		var se *StatusError
		if errors.As(err, &se) {
			r.reply(ctx, &m, se.Response)
		}
	default:
		rerr := r.q.Retry(it.ID, err)
		switch {
		case errors.Is(rerr, queue.ErrExhausted):
			r.log.Warn("egress delivery given up after the last attempt", "topic", m.Topic, "attempts", it.Attempts+1, "error", err)
		case rerr != nil:
			r.settle(rerr)
		default:
			r.log.Debug("egress delivery will be retried", "topic", m.Topic, "attempt", it.Attempts+1, "error", err)
		}
	}
}

// settle logs a failed Ack, Retry or Fail (ErrUnknown: the item was dropped
// by overflow meanwhile; ErrClosed: shutting down).
func (r *route) settle(err error) {
	if err != nil && !errors.Is(err, queue.ErrUnknown) && !errors.Is(err, queue.ErrClosed) {
		r.log.Error("egress queue update failed", "error", err)
	}
}

// reply publishes the endpoint's answer to the message's Response Topic.
func (r *route) reply(ctx context.Context, m *bridge.Message, resp Response) {
	if m.ResponseTopic == "" {
		return
	}
	out := bridge.Message{
		Topic:           m.ResponseTopic,
		Payload:         resp.Payload,
		QoS:             1,
		ContentType:     resp.ContentType,
		CorrelationData: m.CorrelationData,
		UserProperties:  map[string]string{"status": resp.Status},
	}
	if err := r.e.cfg.Broker.Publish(ctx, out); err != nil {
		r.log.Warn("could not publish the endpoint's answer to the response topic", "response_topic", m.ResponseTopic, "error", err)
		return
	}
	r.replies.Add(1)
}

func (r *route) stats() RouteStats {
	var s RouteStats
	if r.q != nil {
		s.Stats = r.q.Stats()
	}
	s.Expired = r.expired.Load()
	s.Replies = r.replies.Load()
	return s
}
