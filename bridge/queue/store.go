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
	// pipelineDepth is how many applied batches may queue for the settler
	// beyond the one it waits on. With 0, one batch is being synced while
	// the next is gathered and applied; then the committer waits, and the
	// Puts arriving meanwhile make the following batch larger.
	pipelineDepth = 0
)

// Store is one pebble database holding any number of named queues, one per
// route. All its queues share one committer goroutine, so concurrent Puts to
// different queues are made durable by the same fsync.
type Store struct {
	db  *pebble.DB
	log *slog.Logger

	reqs    chan *putReq
	jobs    chan *job     // applied batches waiting for their fsync
	quit    chan struct{} // closed by Close: committer and syncer stop
	stopped chan struct{} // closed when the settler has answered its last Put
	wg      sync.WaitGroup
	dirty   atomic.Bool   // unsynced writes exist
	commits atomic.Uint64 // group-commit batches, for tests and benchmarks

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
// discards them). The store starts three goroutines, the group committer,
// the settler that waits for its fsyncs and the periodic syncer, which
// Close ends.
func OpenStore(dir string, log *slog.Logger) (*Store, error) {
	return openStoreFS(dir, log, nil)
}

// openStoreFS is OpenStore on a given file system (tests count fsyncs).
func openStoreFS(dir string, log *slog.Logger, fs vfs.FS) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := &pebble.Options{Logger: pebbleLogger{log}, FS: fs}
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
		jobs:    make(chan *job, pipelineDepth),
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),
		queues:  make(map[string]*Queue),
	}
	s.wg.Add(3)
	go s.commitLoop()
	go s.settleLoop()
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
	// Puts to an earlier handle of this name that are still on their way
	// must reach the disk before the index and the next ID are read.
	if err := s.barrier(); err != nil {
		return nil, err
	}
	q := newQueue(s, name, opts.withDefaults())
	if err := q.load(); err != nil {
		return nil, fmt.Errorf("queue %q: %w", name, err)
	}
	s.queues[name] = q
	return q, nil
}

// barrier waits until every Put handed to the committer before it has
// been applied and settled.
func (s *Store) barrier() error {
	r := &putReq{done: make(chan error, 1)}
	select {
	case s.reqs <- r:
	case <-s.quit:
		return ErrClosed
	}
	select {
	case err := <-r.done:
		return err
	case <-s.stopped:
		return ErrClosed
	}
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
	done    chan error // buffered: the settler never blocks on it

	// Set by the committer while it builds a batch.
	id  uint64
	enq int64
	err error
}

var reqPool = sync.Pool{New: func() any { return &putReq{done: make(chan error, 1)} }}

// job is one group commit on its way to the disk.
type job struct {
	b       *pebble.Batch // nil: nothing to write
	reqs    []*putReq
	touched []*Queue
	err     error
}

// commitLoop is the group committer. It takes the first waiting Put, then
// every other one already waiting (up to maxBatchItems / maxBatchBytes),
// writes them all as one pebble batch and hands the batch to settleLoop,
// which waits for its fsync. Batches are applied in order, so IDs, the WAL
// and the index agree; pebble's WAL writer syncs every batch applied while
// the previous sync ran with one further fsync. The batch size thus follows
// the load: one item per fsync when idle, hundreds under contention.
func (s *Store) commitLoop() {
	defer s.wg.Done()
	defer close(s.jobs)
	for {
		var reqs []*putReq
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
			reqs = append(make([]*putReq, 0, 16), r)
		}
		size := len(reqs[0].payload)
	fill:
		for len(reqs) < maxBatchItems && size < maxBatchBytes {
			select {
			case r := <-s.reqs:
				reqs = append(reqs, r)
				size += len(r.payload)
			default:
				break fill
			}
		}
		s.jobs <- s.build(reqs)
	}
}

// build plans a batch of puts and applies it to pebble without waiting
// for the sync.
func (s *Store) build(reqs []*putReq) *job {
	j := &job{reqs: reqs}
	b := s.db.NewBatch()
	for _, r := range reqs {
		q := r.q
		if q == nil {
			continue // a barrier
		}
		q.mu.Lock()
		if q.plan(b, r) && !q.inBatch {
			q.inBatch = true
			j.touched = append(j.touched, q)
		}
		q.mu.Unlock()
	}
	if len(j.touched) == 0 {
		_ = b.Close()
		return j
	}
	for _, q := range j.touched {
		q.mu.Lock()
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], q.nextID)
		_ = b.Set(q.key(kindNext, 0), v[:], nil)
		q.inBatch = false
		q.mu.Unlock()
	}
	j.b = b
	s.dbMu.RLock()
	if s.dbClosed {
		j.err = ErrClosed
	} else {
		// Unsynced writes made before this point are covered by its sync.
		s.dirty.Store(false)
		j.err = s.db.ApplyNoSyncWait(b, pebble.Sync)
		s.commits.Add(1)
	}
	s.dbMu.RUnlock()
	return j
}

// settleLoop waits for each batch's fsync, in the order they were applied,
// then files the items in their queues and answers the Puts.
func (s *Store) settleLoop() {
	defer s.wg.Done()
	defer close(s.stopped)
	for j := range s.jobs {
		if j.b != nil {
			err := j.b.SyncWait()
			if j.err == nil {
				j.err = err
			}
			j.err = errors.Join(j.err, j.b.Close())
			if j.err != nil {
				s.log.Error("queue commit failed", "puts", len(j.reqs), "error", j.err)
			}
		}
		s.settle(j)
	}
}

func (s *Store) settle(j *job) {
	first := make(map[*Queue]uint64, len(j.touched))
	for _, r := range j.reqs {
		if r.err != nil || r.q == nil {
			continue
		}
		q := r.q
		if _, ok := first[q]; !ok {
			first[q] = r.id
		}
		q.mu.Lock()
		q.file(r, j.err)
		q.mu.Unlock()
		if j.err != nil {
			r.err = fmt.Errorf("queue %q: %w", q.name, j.err)
		}
	}
	for q, id := range first {
		q.mu.Lock()
		if j.err == nil {
			q.trim(id)
		}
		q.signal()
		q.mu.Unlock()
	}
	for _, r := range j.reqs {
		err := r.err
		r.q, r.payload, r.err = nil, nil, nil
		r.done <- err
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

// setData writes an item record into b without intermediate copies.
func setData(b *pebble.Batch, prefix []byte, id uint64, enq int64, payload []byte) {
	op := b.SetDeferred(len(prefix)+9, 9+len(payload))
	n := copy(op.Key, prefix)
	op.Key[n] = kindData
	binary.BigEndian.PutUint64(op.Key[n+1:], id)
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
