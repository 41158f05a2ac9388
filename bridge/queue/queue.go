package queue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cockroachdb/pebble"
)

// Item is one message in a queue, as handed out by Next.
type Item struct {
	// ID is unique within the queue and grows with every Put, across
	// restarts too; FIFO order is ID order.
	ID uint64
	// Payload is the caller's opaque record, a fresh copy owned by the
	// receiver.
	Payload []byte
	// Attempts is how many deliveries of this item failed before (Retry);
	// 0 on the first delivery. A delivery cut short by a crash does not
	// count.
	Attempts int
	// NotBefore is when the item became due: its enqueue time, or the time
	// the last Retry scheduled.
	NotBefore time.Time
	// Enqueued is when Put stored the item.
	Enqueued time.Time
}

// Stats is a snapshot of a queue's gauges and counters. Counters start at
// zero when the queue is opened (Prometheus counters reset on restart too);
// Depth and Bytes include what was recovered from disk.
type Stats struct {
	Depth     int    // items stored: waiting and in flight
	InFlight  int    // items handed out by Next, not yet settled
	Bytes     int64  // payload bytes stored
	Enqueued  uint64 // Puts that succeeded
	Delivered uint64 // Acks
	Retried   uint64 // Retries that scheduled another delivery
	Failed    uint64 // Fails, plus Retries past MaxAttempts
	Dropped   uint64 // items deleted by DropOldest to make room
	Refused   uint64 // Puts refused: ErrFull or ErrTooLarge
}

// Queue is one durable FIFO of a Store. All its methods are safe for
// concurrent use.
type Queue struct {
	store    *Store
	name     string
	opts     Options
	log      *slog.Logger
	prefix   []byte
	ownStore bool // opened by Open: Close closes the store too

	mu       sync.Mutex
	closed   bool
	wake     chan struct{} // closed and replaced to wake waiting Next calls
	waiters  int           // Next calls waiting on wake
	nextID   uint64
	dq       deque
	ready    heapq // due entries by ID
	delayed  heapq // entries waiting for notBefore, by notBefore
	inflight map[uint64]*entry
	depth    int
	bytes    int64
	st       Stats // counters only; gauges are computed in Stats

	// Puts planned in batches not yet synced, reserved against the bounds.
	pendItems int
	pendBytes int64
	inBatch   bool // the committer has seen this queue in the batch it builds
}

// Open opens a queue with a store of its own in cfg.Dir (in memory when
// Dir is ""). Closing the queue closes the store. Routes that share a
// directory should share one Store instead (OpenStore, Store.Queue), so
// their Puts share fsyncs.
func Open(cfg Config) (*Queue, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s, err := OpenStore(cfg.Dir, cfg.Logger)
	if err != nil {
		return nil, err
	}
	q, err := s.Queue(cfg.Name, cfg.Options)
	if err != nil {
		return nil, errors.Join(err, s.Close())
	}
	q.ownStore = true
	return q, nil
}

func newQueue(s *Store, name string, opts Options) *Queue {
	return &Queue{
		store:    s,
		name:     name,
		opts:     opts,
		log:      s.log.With("queue", name),
		prefix:   queuePrefix(name),
		wake:     make(chan struct{}),
		nextID:   1,
		ready:    heapq{less: byID},
		delayed:  heapq{less: byDue},
		inflight: make(map[uint64]*entry),
	}
}

// Name returns the queue's name in its store.
func (q *Queue) Name() string { return q.name }

// Put stores payload at the tail of the queue and returns once it is on
// disk (synced), so a caller may acknowledge the message upstream. Puts
// from many goroutines are group-committed: one batch and one fsync for all
// that wait together.
//
// ctx bounds only the wait to hand the item to the committer; once handed
// over, Put waits for the outcome (one fsync), so payload is never read
// after Put returns. Errors: ErrFull (RefuseNew at a bound), ErrTooLarge,
// ErrClosed, ctx's error, or a storage error. On any error the item must be
// taken as not stored.
func (q *Queue) Put(ctx context.Context, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	size := int64(len(payload))
	q.mu.Lock()
	switch {
	case q.closed:
		q.mu.Unlock()
		return ErrClosed
	case q.opts.MaxBytes > 0 && size > q.opts.MaxBytes:
		q.st.Refused++
		q.mu.Unlock()
		return ErrTooLarge
	case q.opts.Overflow == RefuseNew && q.over(size):
		q.st.Refused++
		q.mu.Unlock()
		return ErrFull
	}
	q.mu.Unlock()

	r := reqPool.Get().(*putReq)
	r.q, r.payload = q, payload
	select {
	case q.store.reqs <- r:
	case <-ctx.Done():
		r.q, r.payload = nil, nil
		reqPool.Put(r)
		return ctx.Err()
	case <-q.store.quit:
		return ErrClosed
	}
	select {
	case err := <-r.done:
		reqPool.Put(r) // answered: the committer and settler are done with it
		return err
	case <-q.store.stopped:
		select {
		case err := <-r.done:
			reqPool.Put(r)
			return err
		default:
			return ErrClosed
		}
	}
}

// over reports whether one more item of size bytes would pass a bound,
// counting the puts planned in batches not yet synced.
func (q *Queue) over(size int64) bool {
	if q.opts.MaxItems > 0 && q.depth+q.pendItems+1 > q.opts.MaxItems {
		return true
	}
	return q.opts.MaxBytes > 0 && q.bytes+q.pendBytes+size > q.opts.MaxBytes
}

// plan adds one put to the batch being built and reports whether it did.
// Called by the committer with q.mu held.
func (q *Queue) plan(b *pebble.Batch, r *putReq) bool {
	size := int64(len(r.payload))
	switch {
	case q.closed:
		r.err = ErrClosed
		return false
	case q.opts.MaxBytes > 0 && size > q.opts.MaxBytes:
		r.err = ErrTooLarge
		q.st.Refused++
		return false
	case q.opts.Overflow == RefuseNew && q.over(size):
		r.err = ErrFull
		q.st.Refused++
		return false
	}
	r.id = q.nextID
	q.nextID++
	r.enq = q.opts.Clock.Now().UnixNano()
	setData(b, q.prefix, r.id, r.enq, r.payload)
	q.pendItems++
	q.pendBytes += size
	return true
}

// file adds a put whose batch is synced (err == nil) to the index, or
// forgets it (err != nil). Called by the settler with q.mu held.
func (q *Queue) file(r *putReq, err error) {
	size := int64(len(r.payload))
	q.pendItems--
	q.pendBytes -= size
	if err != nil {
		return
	}
	e := &entry{id: r.id, enqueued: r.enq, size: int32(size), state: stReady}
	q.dq.push(e)
	q.ready.push(e)
	q.depth++
	q.bytes += size
	q.st.Enqueued++
}

// trim enforces DropOldest after a batch (whose first item is first) was
// filed: while the queue is past a bound it deletes the oldest item not in
// flight, or, when that would be an item of this very batch, the oldest
// item in flight, so the newest data wins. The deletes are written like
// acks (unsynced): after a crash a dropped item may come back, never a
// put one go missing. Called with q.mu held.
func (q *Queue) trim(first uint64) {
	if q.opts.Overflow != DropOldest {
		return
	}
	var victims []*entry
	for (q.opts.MaxItems > 0 && q.depth > q.opts.MaxItems) || (q.opts.MaxBytes > 0 && q.bytes > q.opts.MaxBytes) {
		e := q.dq.find(func(e *entry) bool { return e.state == stReady || e.state == stDelayed })
		if e == nil || e.id >= first {
			if f := q.dq.find(func(e *entry) bool { return e.state == stInflight }); f != nil {
				e = f
			}
		}
		if e == nil {
			break
		}
		q.unlink(e)
		q.remove(e)
		q.st.Dropped++
		victims = append(victims, e)
	}
	if len(victims) == 0 {
		return
	}
	if err := q.store.write(func(b *pebble.Batch) {
		for _, e := range victims {
			q.deleteKeys(b, e)
		}
	}); err != nil {
		q.log.Error("queue delete failed", "error", err)
	}
}

// Next returns the next due item and marks it in flight; the caller must
// settle it with Ack, Retry or Fail. It blocks until an item is due (its
// NotBefore has passed), a delivery slot is free (MaxInFlight, Ordered),
// ctx ends (ctx's error) or the queue is closed (ErrClosed). Due items come
// in ID order.
func (q *Queue) Next(ctx context.Context) (Item, error) {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return Item{}, ErrClosed
		}
		now := q.opts.Clock.Now().UnixNano()
		e, wait := q.pick(now)
		if e != nil {
			q.unlink(e)
			e.state = stInflight
			q.inflight[e.id] = e
			it := Item{ID: e.id, Attempts: int(e.attempts), Enqueued: time.Unix(0, e.enqueued)}
			it.NotBefore = it.Enqueued
			if e.notBefore != 0 {
				it.NotBefore = time.Unix(0, e.notBefore)
			}
			q.mu.Unlock()
			v, err := q.store.get(q.key(kindData, e.id))
			if err == nil {
				var payload []byte
				if _, payload, err = decodeData(v); err == nil {
					it.Payload = payload
					return it, nil
				}
			}
			if errors.Is(err, ErrClosed) {
				return Item{}, ErrClosed
			}
			if q.lost(e, err) {
				continue
			}
			return Item{}, err
		}
		if err := ctx.Err(); err != nil {
			q.mu.Unlock()
			return Item{}, err
		}
		wake := q.wake
		q.waiters++
		q.mu.Unlock()

		var timer Timer
		var fire <-chan time.Time
		if wait > 0 {
			timer = q.opts.Clock.NewTimer(time.Duration(wait))
			fire = timer.C()
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		q.mu.Lock()
		q.waiters--
		q.mu.Unlock()
	}
}

// lost handles an item whose record could not be read. A missing or
// unreadable record is dropped from the index as failed (true: try the
// next item); any other error puts the item back (false).
func (q *Queue) lost(e *entry, err error) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.inflight[e.id] != e {
		return true // dropped by overflow meanwhile
	}
	delete(q.inflight, e.id)
	if !errors.Is(err, pebble.ErrNotFound) && !errors.Is(err, errCorrupt) {
		q.makeWaiting(e, q.opts.Clock.Now().UnixNano())
		q.signal()
		return false
	}
	q.log.Error("dropping unreadable queued item", "id", e.id, "error", err)
	q.remove(e)
	q.st.Failed++
	q.signal()
	if werr := q.store.write(func(b *pebble.Batch) { q.deleteKeys(b, e) }); werr != nil {
		q.log.Error("queue delete failed", "id", e.id, "error", werr)
	}
	return true
}

// pick chooses the item Next hands out, or says how long until one may be
// due (0: wait for a change). Called with q.mu held.
func (q *Queue) pick(now int64) (*entry, int64) {
	for q.delayed.len() > 0 && q.delayed.min().notBefore <= now {
		e := q.delayed.pop()
		e.state = stReady
		q.ready.push(e)
	}
	if q.opts.Ordered {
		if len(q.inflight) > 0 {
			return nil, 0
		}
		h := q.dq.find(func(e *entry) bool { return e.state != stDead && e.state != stDropping })
		switch {
		case h == nil:
			return nil, 0
		case h.state == stDelayed:
			return nil, h.notBefore - now
		}
		return h, 0
	}
	if q.opts.MaxInFlight > 0 && len(q.inflight) >= q.opts.MaxInFlight {
		return nil, 0
	}
	if q.ready.len() > 0 {
		return q.ready.min(), 0
	}
	if q.delayed.len() > 0 {
		return nil, q.delayed.min().notBefore - now
	}
	return nil, 0
}

// Ack settles a delivered item: it is deleted. The delete is not synced at
// once (see SyncInterval): after a crash an acknowledged item may be
// delivered again, which at-least-once delivery allows.
func (q *Queue) Ack(id uint64) error {
	e, err := q.take(id)
	if err != nil {
		return err
	}
	defer q.mu.Unlock()
	q.remove(e)
	q.st.Delivered++
	return q.store.write(func(b *pebble.Batch) { q.deleteKeys(b, e) })
}

// Fail settles an item that can never be delivered (the endpoint answered
// 4xx / 4.xx): it is deleted and counted in Stats.Failed.
func (q *Queue) Fail(id uint64) error {
	e, err := q.take(id)
	if err != nil {
		return err
	}
	defer q.mu.Unlock()
	q.remove(e)
	q.st.Failed++
	return q.store.write(func(b *pebble.Batch) { q.deleteKeys(b, e) })
}

// Retry settles a delivery that failed for now (5xx / 5.xx, timeout,
// connection error; cause is the error, for the log): the item's Attempts
// grows by one and it is due again after the backoff, persisted (unsynced,
// like Ack). If that was delivery number MaxAttempts, the item is deleted
// instead, counted in Stats.Failed, and Retry returns ErrExhausted.
func (q *Queue) Retry(id uint64, cause error) error {
	e, err := q.take(id)
	if err != nil {
		return err
	}
	defer q.mu.Unlock()
	e.attempts++
	if q.opts.MaxAttempts > 0 && int(e.attempts) >= q.opts.MaxAttempts {
		q.remove(e)
		q.st.Failed++
		q.log.Warn("giving up delivery", "id", id, "attempts", e.attempts, "error", cause)
		return errors.Join(ErrExhausted, q.store.write(func(b *pebble.Batch) { q.deleteKeys(b, e) }))
	}
	now := q.opts.Clock.Now()
	d := q.opts.Backoff.Delay(int(e.attempts), rand.Float64())
	e.notBefore = now.Add(d).UnixNano()
	e.hasMeta = true
	q.makeWaiting(e, now.UnixNano())
	q.st.Retried++
	return q.store.write(func(b *pebble.Batch) {
		_ = b.Set(q.key(kindMeta, e.id), encodeMeta(e.attempts, e.notBefore), nil)
	})
}

// take takes an item out of the in-flight map and returns with q.mu held
// (unless it fails); the caller files it as removed or waiting.
func (q *Queue) take(id uint64) (*entry, error) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil, ErrClosed
	}
	e, ok := q.inflight[id]
	if !ok {
		q.mu.Unlock()
		return nil, fmt.Errorf("%w: %d", ErrUnknown, id)
	}
	delete(q.inflight, id)
	q.signal()
	return e, nil
}

// remove marks a stored entry gone. Called with q.mu held, after unlink.
func (q *Queue) remove(e *entry) {
	q.depth--
	q.bytes -= int64(e.size)
	if e.state != stDead {
		e.state = stDead
		q.dq.died()
	}
}

// unlink takes e out of whichever heap or map holds it.
func (q *Queue) unlink(e *entry) {
	switch e.state {
	case stReady:
		q.ready.remove(e)
	case stDelayed:
		q.delayed.remove(e)
	case stInflight:
		delete(q.inflight, e.id)
	}
}

// makeWaiting files e as ready or delayed according to its notBefore.
func (q *Queue) makeWaiting(e *entry, now int64) {
	if e.notBefore <= now {
		e.state = stReady
		q.ready.push(e)
	} else {
		e.state = stDelayed
		q.delayed.push(e)
	}
}

// signal wakes the Next calls that wait for a change.
func (q *Queue) signal() {
	if q.waiters == 0 || q.closed {
		return
	}
	close(q.wake)
	q.wake = make(chan struct{})
}

func (q *Queue) deleteKeys(b *pebble.Batch, e *entry) {
	_ = b.Delete(q.key(kindData, e.id), nil)
	if e.hasMeta {
		_ = b.Delete(q.key(kindMeta, e.id), nil)
	}
}

// Stats returns the queue's gauges and counters.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.st
	s.Depth = q.depth
	s.InFlight = len(q.inflight)
	s.Bytes = q.bytes
	return s
}

// Close closes the queue: blocked and later Next calls return ErrClosed,
// Puts not yet committed fail with ErrClosed, and items in flight stay
// stored, to be delivered again when the queue is next opened. A queue
// from Open closes its store too. Close is idempotent.
func (q *Queue) Close() error {
	q.shut()
	q.store.forget(q)
	if q.ownStore {
		return q.store.Close()
	}
	return nil
}

func (q *Queue) shut() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.wake)
	}
}

func (q *Queue) key(kind byte, id uint64) []byte {
	k := make([]byte, len(q.prefix)+1, len(q.prefix)+9)
	copy(k, q.prefix)
	k[len(q.prefix)] = kind
	if kind != kindNext {
		k = binary.BigEndian.AppendUint64(k, id)
	}
	return k
}

// load builds the index from the store: every item record, its meta
// record if any, and the next ID. Records that cannot be read are logged
// and deleted.
func (q *Queue) load() error {
	var es []*entry
	var junk [][]byte
	idOf := func(k []byte) uint64 { return binary.BigEndian.Uint64(k[len(q.prefix)+1:]) }
	bounds := func(kind byte) ([]byte, []byte) {
		lo := q.key(kind, 0)[:len(q.prefix)+1]
		hi := append([]byte(nil), lo...)
		hi[len(hi)-1]++
		return lo, hi
	}
	lo, hi := bounds(kindData)
	err := q.store.scan(lo, hi, func(k, v []byte) error {
		enq, payload, err := decodeData(v)
		if err != nil || len(k) != len(q.prefix)+9 {
			q.log.Error("deleting unreadable queued item", "key", fmt.Sprintf("%x", k), "error", err)
			junk = append(junk, append([]byte(nil), k...))
			return nil
		}
		es = append(es, &entry{id: idOf(k), enqueued: enq, size: int32(len(payload))})
		return nil
	})
	if err != nil {
		return err
	}
	lo, hi = bounds(kindMeta)
	i := 0
	err = q.store.scan(lo, hi, func(k, v []byte) error {
		attempts, notBefore, err := decodeMeta(v)
		var id uint64
		if len(k) == len(q.prefix)+9 {
			id = idOf(k)
			for i < len(es) && es[i].id < id {
				i++
			}
		}
		if err != nil || id == 0 || i == len(es) || es[i].id != id {
			junk = append(junk, append([]byte(nil), k...)) // orphan: its item was settled
			return nil
		}
		es[i].attempts, es[i].notBefore, es[i].hasMeta = attempts, notBefore, true
		return nil
	})
	if err != nil {
		return err
	}
	v, err := q.store.get(q.key(kindNext, 0))
	switch {
	case err == nil && len(v) == 8:
		q.nextID = binary.BigEndian.Uint64(v)
	case err != nil && !errors.Is(err, pebble.ErrNotFound):
		return err
	}
	if n := len(es); n > 0 && es[n-1].id >= q.nextID {
		q.nextID = es[n-1].id + 1
	}
	if q.nextID == 0 {
		q.nextID = 1
	}
	now := q.opts.Clock.Now().UnixNano()
	for _, e := range es {
		q.dq.push(e)
		q.makeWaiting(e, now)
		q.depth++
		q.bytes += int64(e.size)
	}
	q.trim(math.MaxUint64) // the bounds may have shrunk, or a drop was lost
	if len(junk) > 0 {
		return q.store.write(func(b *pebble.Batch) {
			for _, k := range junk {
				_ = b.Delete(k, nil)
			}
		})
	}
	return nil
}
