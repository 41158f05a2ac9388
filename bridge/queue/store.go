package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
)

// Errors returned by the queue.
var (
	// ErrClosed is returned by every call on a closed queue or store,
	// including a Next that was waiting when Close was called.
	ErrClosed = errors.New("queue: closed")
	// ErrFull is returned by Put under RefuseNew when the queue is at
	// MaxItems or MaxBytes.
	ErrFull = errors.New("queue: full")
	// ErrTooLarge is returned by Put for a payload larger than MaxBytes.
	ErrTooLarge = errors.New("queue: payload larger than the queue's byte bound")
	// ErrUnknown is returned by Ack, Retry and Fail for an ID that is not in
	// flight: never handed out, already settled, or dropped by overflow.
	ErrUnknown = errors.New("queue: item not in flight")
	// ErrExhausted is returned by Retry when the item has had MaxAttempts
	// deliveries: it has been dropped and counted as failed.
	ErrExhausted = errors.New("queue: delivery attempts exhausted")
	// ErrInUse is returned by Store.Queue for a name that is already open.
	ErrInUse = errors.New("queue: name already open in this store")
)

const (
	// SyncInterval is how often acknowledgements, retries and failures
	// (written without waiting for the disk) are synced, at the latest. A
	// crash loses at most this much of them; a lost Ack means the item is
	// delivered again, a lost Retry that it comes back sooner.
	SyncInterval = 200 * time.Millisecond

	maxBatchItems = 4096    // puts in one group commit, at most
	maxBatchBytes = 4 << 20 // payload bytes in one group commit, at most
	pendingPuts   = 4096    // puts waiting for the committer before Put blocks
)

// Store is one pebble database holding any number of named queues, one per
// route. All its queues share one committer goroutine, so concurrent Puts to
// different queues are made durable by the same fsync.
type Store struct {
	db  *pebble.DB
	log *slog.Logger

	reqs    chan *putReq
	quit    chan struct{} // closed by Close: committer and syncer stop
	stopped chan struct{} // closed when the committer has returned
	wg      sync.WaitGroup
	dirty   atomic.Bool   // unsynced writes exist
	commits atomic.Uint64 // synced group commits, for tests

	// dbMu guards the database handle against Close: every use holds it
	// for reading and checks dbClosed.
	dbMu     sync.RWMutex
	dbClosed bool

	mu     sync.Mutex
	queues map[string]*Queue
	closed bool

	closeOnce sync.Once
	closeErr  error
}

// OpenStore opens (creating if needed) the queue database in dir, or an
// in-memory one when dir is "". Pebble's own messages go to log (nil
// discards them). The store starts two goroutines, the group committer and
// the periodic syncer, which Close ends.
func OpenStore(dir string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := &pebble.Options{Logger: pebbleLogger{log}}
	path := dir
	if dir == "" {
		opts.FS = vfs.NewMem()
		path = "queue"
	} else if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("queue store: %w", err)
	}
	db, err := pebble.Open(path, opts)
	if err != nil {
		return nil, fmt.Errorf("queue store at %s: %w", dir, err)
	}
	s := &Store{
		db:      db,
		log:     log,
		reqs:    make(chan *putReq, pendingPuts),
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),
		queues:  make(map[string]*Queue),
	}
	s.wg.Add(2)
	go s.commitLoop()
	go s.syncLoop()
	return s, nil
}

// Close closes every queue of the store (blocked Next calls return
// ErrClosed), ends its goroutines, syncs what is unsynced and closes the
// database. It is idempotent; later calls return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		qs := make([]*Queue, 0, len(s.queues))
		for _, q := range s.queues {
			qs = append(qs, q)
		}
		s.queues = nil
		s.mu.Unlock()
		for _, q := range qs {
			q.shut()
		}
		close(s.quit)
		s.wg.Wait()

		s.dbMu.Lock()
		defer s.dbMu.Unlock()
		s.dbClosed = true
		var errs []error
		if s.dirty.Swap(false) {
			errs = append(errs, s.db.LogData(nil, pebble.Sync))
		}
		errs = append(errs, s.db.Close())
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// Queue opens the named queue, loading the index of what it holds (every
// item not acknowledged before, including those in flight when the process
// stopped, is due again, with its attempts and retry time as last
// recorded). A name can be open once at a time per store.
func (s *Store) Queue(name string, opts Options) (*Queue, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if _, ok := s.queues[name]; ok {
		return nil, fmt.Errorf("%w: %q", ErrInUse, name)
	}
	q := newQueue(s, name, opts.withDefaults())
	if err := q.load(); err != nil {
		return nil, fmt.Errorf("queue %q: %w", name, err)
	}
	s.queues[name] = q
	return q, nil
}

// forget removes a closed queue from the store so its name can be opened
// again.
func (s *Store) forget(q *Queue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queues[q.name] == q {
		delete(s.queues, q.name)
	}
}

// write applies a small batch without waiting for the disk (acks, retries,
// failures); the syncer or the next group commit makes it durable.
func (s *Store) write(fill func(b *pebble.Batch)) error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.dbClosed {
		return ErrClosed
	}
	b := s.db.NewBatch()
	fill(b)
	err := b.Commit(pebble.NoSync)
	// Marked after the commit: a group commit that cleared the flag before
	// this write reached the WAL must not leave it unsynced.
	s.dirty.Store(true)
	return errors.Join(err, b.Close())
}

// get returns a copy of the value stored under key.
func (s *Store) get(key []byte) ([]byte, error) {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.dbClosed {
		return nil, ErrClosed
	}
	v, c, err := s.db.Get(key)
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), v...)
	return out, c.Close()
}

// scan calls fn for every key in [lower, upper).
func (s *Store) scan(lower, upper []byte, fn func(k, v []byte) error) (err error) {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.dbClosed {
		return ErrClosed
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	for it.First(); it.Valid(); it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

// syncLoop syncs unsynced writes every SyncInterval.
func (s *Store) syncLoop() {
	defer s.wg.Done()
	t := time.NewTicker(SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
			if !s.dirty.Swap(false) {
				continue
			}
			s.dbMu.RLock()
			var err error
			if !s.dbClosed {
				err = s.db.LogData(nil, pebble.Sync)
			}
			s.dbMu.RUnlock()
			if err != nil {
				s.log.Error("queue sync failed", "error", err)
			}
		}
	}
}

// putReq is one Put waiting for the committer.
type putReq struct {
	q       *Queue
	payload []byte
	done    chan error // buffered: the committer never blocks on it

	// Set by the committer while it builds a batch.
	id      uint64
	enq     int64
	err     error
	dropped bool // made room for a later put of the same batch
}

var reqPool = sync.Pool{New: func() any { return &putReq{done: make(chan error, 1)} }}

// commitLoop is the group committer. It takes the first waiting Put, then
// every other one already waiting (up to maxBatchItems / maxBatchBytes),
// writes them all in one batch with one fsync, and answers them all. While
// it waits for the disk new Puts queue up, so the batch size follows the
// load: one item per fsync when idle, thousands under contention.
func (s *Store) commitLoop() {
	defer s.wg.Done()
	defer close(s.stopped)
	batch := make([]*putReq, 0, 64)
	for {
		select {
		case <-s.quit:
			for {
				select {
				case r := <-s.reqs:
					r.done <- ErrClosed
				default:
					return
				}
			}
		case r := <-s.reqs:
			batch = append(batch[:0], r)
		}
		size := len(batch[0].payload)
	fill:
		for len(batch) < maxBatchItems && size < maxBatchBytes {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
				size += len(r.payload)
			default:
				break fill
			}
		}
		s.commit(batch)
		clear(batch)
	}
}

// commit makes one batch of puts durable and then visible.
func (s *Store) commit(reqs []*putReq) {
	b := s.db.NewBatch()
	var touched []*Queue
	for _, r := range reqs {
		q := r.q
		q.mu.Lock()
		if q.pend == nil {
			touched = append(touched, q)
			q.pend = make([]*putReq, 0, 8)
		}
		q.plan(b, r)
		q.mu.Unlock()
	}
	var err error
	write := false
	for _, q := range touched {
		write = write || len(q.pend) > 0 || len(q.victims) > 0
	}
	if write {
		for _, q := range touched {
			q.mu.Lock()
			var v [8]byte
			binary.BigEndian.PutUint64(v[:], q.nextID)
			_ = b.Set(q.key(kindNext, 0), v[:], nil)
			q.mu.Unlock()
		}
		s.dbMu.RLock()
		if s.dbClosed {
			err = ErrClosed
		} else {
			// Writes made before this point are covered by this sync.
			s.dirty.Store(false)
			err = b.Commit(pebble.Sync)
			s.commits.Add(1)
		}
		s.dbMu.RUnlock()
		if err != nil {
			s.log.Error("queue commit failed", "puts", len(reqs), "error", err)
		}
	}
	err = errors.Join(err, b.Close())
	for _, q := range touched {
		q.mu.Lock()
		q.settle(err)
		q.mu.Unlock()
	}
	for _, r := range reqs {
		e := r.err
		if e == nil && err != nil {
			e = fmt.Errorf("queue %q: %w", r.q.name, err)
		}
		r.q, r.payload = nil, nil
		r.done <- e
	}
}

// Keys: 'q', the name's length (one byte), the name, a kind byte, and for
// items and metas the ID as 8 big-endian bytes, so a queue's items sort in
// ID order and no name's keys can fall inside another's.
const (
	kindData = 'd' // value: version, enqueued (8 bytes), payload
	kindMeta = 'm' // value: version, attempts (4 bytes), notBefore (8 bytes)
	kindNext = 'n' // value: next ID (8 bytes)
)

const recordVersion = 1

var errCorrupt = errors.New("queue: unreadable record")

func queuePrefix(name string) []byte {
	p := make([]byte, 0, 2+len(name)+1+8)
	p = append(p, 'q', byte(len(name)))
	return append(p, name...)
}

// setData writes an item record into b without an intermediate copy.
func setData(b *pebble.Batch, key []byte, enq int64, payload []byte) {
	op := b.SetDeferred(len(key), 9+len(payload))
	copy(op.Key, key)
	op.Value[0] = recordVersion
	binary.BigEndian.PutUint64(op.Value[1:9], uint64(enq))
	copy(op.Value[9:], payload)
	_ = op.Finish()
}

func decodeData(v []byte) (enq int64, payload []byte, err error) {
	if len(v) < 9 || v[0] != recordVersion {
		return 0, nil, errCorrupt
	}
	return int64(binary.BigEndian.Uint64(v[1:9])), v[9:], nil
}

func encodeMeta(attempts int32, notBefore int64) []byte {
	v := make([]byte, 13)
	v[0] = recordVersion
	binary.BigEndian.PutUint32(v[1:5], uint32(attempts))
	binary.BigEndian.PutUint64(v[5:13], uint64(notBefore))
	return v
}

func decodeMeta(v []byte) (attempts int32, notBefore int64, err error) {
	if len(v) != 13 || v[0] != recordVersion {
		return 0, 0, errCorrupt
	}
	return int32(binary.BigEndian.Uint32(v[1:5])), int64(binary.BigEndian.Uint64(v[5:13])), nil
}

// pebbleLogger sends pebble's own messages to slog instead of the standard
// logger's stderr.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "queue")
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "queue")
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "queue")
	os.Exit(1)
}

var _ io.Closer = (*Store)(nil)
