package queue

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgebridge/gateway/internal/testwait"
)

func TestFIFO(t *testing.T) {
	for _, dir := range []string{t.TempDir(), ""} {
		name := map[bool]string{true: "memory", false: "disk"}[dir == ""]
		t.Run(name, func(t *testing.T) {
			q := openQueue(t, openStore(t, dir), "r", Options{})
			var want []string
			for i := range 100 {
				want = append(want, "m"+strconv.Itoa(i))
			}
			put(t, q, want...)
			var bytes int64
			for _, w := range want {
				bytes += int64(len(w))
			}
			if st := q.Stats(); st.Depth != 100 || st.Enqueued != 100 || st.Bytes != bytes {
				t.Fatalf("stats after puts = %+v", st)
			}
			var last uint64
			for i := range 100 {
				it := next(t, q)
				if it.ID <= last || string(it.Payload) != want[i] || it.Attempts != 0 {
					t.Fatalf("item %d = %+v (last ID %d), want payload %q", i, it, last, want[i])
				}
				if it.Enqueued.IsZero() || !it.NotBefore.Equal(it.Enqueued) {
					t.Fatalf("item %d times: enqueued %v, not before %v", i, it.Enqueued, it.NotBefore)
				}
				last = it.ID
			}
			if st := q.Stats(); st.InFlight != 100 || st.Depth != 100 {
				t.Fatalf("stats with all in flight = %+v", st)
			}
			noNext(t, q)
			for id := uint64(1); id <= last; id++ {
				if err := q.Ack(id); err != nil {
					t.Fatal(err)
				}
			}
			if err := q.Ack(1); !errors.Is(err, ErrUnknown) {
				t.Fatalf("second Ack = %v, want ErrUnknown", err)
			}
			if st := q.Stats(); st.Depth != 0 || st.Bytes != 0 || st.Delivered != 100 || st.InFlight != 0 {
				t.Fatalf("stats after acks = %+v", st)
			}
		})
	}
}

func TestNextWaitsForPut(t *testing.T) {
	q := openQueue(t, openStore(t, t.TempDir()), "r", Options{})
	got := make(chan Item)
	go func() {
		it, err := q.Next(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- it
	}()
	time.Sleep(10 * time.Millisecond)
	put(t, q, "late")
	if it := <-got; string(it.Payload) != "late" {
		t.Fatalf("got %q", it.Payload)
	}
}

func TestOrdered(t *testing.T) {
	clock := newFakeClock()
	q := openQueue(t, openStore(t, t.TempDir()), "r", Options{
		Ordered: true, Clock: clock,
		Backoff: Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 2},
	})
	put(t, q, "a", "b", "c")
	a := next(t, q)
	if string(a.Payload) != "a" {
		t.Fatalf("first = %q", a.Payload)
	}
	noNext(t, q) // only the head may be in flight
	if err := q.Retry(a.ID, errors.New("503")); err != nil {
		t.Fatal(err)
	}
	noNext(t, q) // "b" is due, but the retried head holds it back

	got := make(chan Item, 1)
	go func() {
		it, err := q.Next(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- it
	}()
	testwait.For(t, "Next to wait on the clock", func() bool { return clock.waiting() > 0 })
	clock.Advance(time.Second)
	a2 := <-got
	if a2.ID != a.ID || a2.Attempts != 1 || !a2.NotBefore.Equal(clock.Now()) {
		t.Fatalf("redelivered head = %+v, want ID %d, 1 attempt, due %v", a2, a.ID, clock.Now())
	}
	if err := q.Ack(a2.ID); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"b", "c"} {
		it := next(t, q)
		if string(it.Payload) != want {
			t.Fatalf("got %q, want %q", it.Payload, want)
		}
		noNext(t, q)
		if err := q.Ack(it.ID); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUnorderedRetryLetsOthersPass(t *testing.T) {
	clock := newFakeClock()
	q := openQueue(t, openStore(t, ""), "r", Options{Clock: clock})
	put(t, q, "a", "b")
	a := next(t, q)
	if err := q.Retry(a.ID, nil); err != nil {
		t.Fatal(err)
	}
	if b := next(t, q); string(b.Payload) != "b" {
		t.Fatalf("got %q, want b", b.Payload)
	}
	noNext(t, q)
	clock.Advance(time.Second)
	if a2 := next(t, q); a2.ID != a.ID {
		t.Fatalf("got %d, want %d", a2.ID, a.ID)
	}
}

func TestConcurrentConsumers(t *testing.T) {
	const n, consumers, limit = 2000, 8, 4
	q := openQueue(t, openStore(t, t.TempDir()), "r", Options{MaxInFlight: limit})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var (
		mu       sync.Mutex
		seen     = map[string]int{}
		cur, max atomic.Int64
		wg       sync.WaitGroup
	)
	for range consumers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				it, err := q.Next(ctx)
				if err != nil {
					return
				}
				c := cur.Add(1)
				for m := max.Load(); c > m && !max.CompareAndSwap(m, c); m = max.Load() {
				}
				mu.Lock()
				seen[string(it.Payload)]++
				mu.Unlock()
				cur.Add(-1)
				if it.ID%7 == 0 && it.Attempts == 0 {
					err = q.Retry(it.ID, errors.New("try again"))
				} else {
					err = q.Ack(it.ID)
				}
				if err != nil {
					t.Error(err)
				}
			}
		}()
	}
	var pw sync.WaitGroup
	for p := range 4 {
		pw.Add(1)
		go func() {
			defer pw.Done()
			for i := p; i < n; i += 4 {
				if err := q.Put(ctx, []byte(strconv.Itoa(i))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	pw.Wait()
	// Retried items are due a second later (real clock, default backoff).
	testwait.For(t, "every item delivered", func() bool { return q.Stats().Delivered == n })
	cancel()
	wg.Wait()
	if max.Load() > limit {
		t.Errorf("%d items in flight at once, limit %d", max.Load(), limit)
	}
	retried := 0
	for i := range n {
		switch seen[strconv.Itoa(i)] {
		case 1:
		case 2:
			retried++
		default:
			t.Fatalf("item %d seen %d times", i, seen[strconv.Itoa(i)])
		}
	}
	if st := q.Stats(); st.Depth != 0 || uint64(retried) != st.Retried || st.Retried == 0 {
		t.Fatalf("stats = %+v, %d retried", st, retried)
	}
}

func TestRetryBackoff(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	s := openStore(t, dir)
	o := Options{Clock: clock, Backoff: Backoff{Initial: time.Second, Max: 8 * time.Second, Multiplier: 2}}
	q := openQueue(t, s, "r", o)
	put(t, q, "x")
	it := next(t, q)
	for i, d := range []time.Duration{1, 2, 4, 8, 8} {
		d *= time.Second
		if err := q.Retry(it.ID, errors.New("503")); err != nil {
			t.Fatal(err)
		}
		due := clock.Now().Add(d)
		noNext(t, q)
		clock.Advance(d - time.Millisecond)
		noNext(t, q)
		clock.Advance(time.Millisecond)
		it = next(t, q)
		if it.Attempts != i+1 || !it.NotBefore.Equal(due) {
			t.Fatalf("retry %d: attempts %d, not before %v; want %d, %v", i+1, it.Attempts, it.NotBefore, i+1, due)
		}
	}
	// Attempts and NotBefore survive a restart.
	if err := q.Retry(it.ID, nil); err != nil {
		t.Fatal(err)
	}
	due := clock.Now().Add(8 * time.Second)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openQueue(t, s, "r", o)
	noNext(t, q)
	clock.Advance(8 * time.Second)
	it = next(t, q)
	if it.Attempts != 6 || !it.NotBefore.Equal(due) {
		t.Fatalf("after reopen: attempts %d, not before %v; want 6, %v", it.Attempts, it.NotBefore, due)
	}
	if st := q.Stats(); st.Retried != 0 || st.Depth != 1 {
		t.Fatalf("stats after reopen = %+v", st)
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 3, Jitter: 0.5}
	for _, c := range []struct {
		attempt int
		r       float64
		want    time.Duration
	}{
		{1, 0, 100 * time.Millisecond},
		{1, 0.999999, 50*time.Millisecond + 50},
		{2, 0, 300 * time.Millisecond},
		{3, 0, 900 * time.Millisecond},
		{4, 0, time.Second},
		{4, 0.5, 750 * time.Millisecond},
		{1000, 0, time.Second},
		{0, 0, 100 * time.Millisecond},
	} {
		if got := b.Delay(c.attempt, c.r); got != c.want {
			t.Errorf("Delay(%d, %v) = %v, want %v", c.attempt, c.r, got, c.want)
		}
	}
	// With jitter, the delays the queue schedules stay within bounds.
	clock := newFakeClock()
	q := openQueue(t, openStore(t, ""), "r", Options{Clock: clock, Backoff: b})
	put(t, q, "x")
	for range 50 {
		it := next(t, q)
		if err := q.Retry(it.ID, nil); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Second)
		it2 := next(t, q)
		d := it2.NotBefore.Sub(clock.Now().Add(-time.Second))
		if d < 50*time.Millisecond || d > 100*time.Millisecond {
			t.Fatalf("first retry delay %v, want 50ms..100ms", d)
		}
		if err := q.Ack(it2.ID); err != nil {
			t.Fatal(err)
		}
		put(t, q, "x")
	}
}

func TestMaxAttemptsAndFail(t *testing.T) {
	clock := newFakeClock()
	q := openQueue(t, openStore(t, t.TempDir()), "r", Options{Clock: clock, MaxAttempts: 3})
	put(t, q, "x", "y")
	x := next(t, q)
	y := next(t, q)
	if err := q.Fail(y.ID); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := q.Retry(x.ID, errors.New("503")); err != nil {
			t.Fatalf("retry %d: %v", i+1, err)
		}
		clock.Advance(time.Hour)
		x = next(t, q)
	}
	if x.Attempts != 2 {
		t.Fatalf("attempts = %d", x.Attempts)
	}
	if err := q.Retry(x.ID, errors.New("503")); !errors.Is(err, ErrExhausted) {
		t.Fatalf("third Retry = %v, want ErrExhausted", err)
	}
	if err := q.Ack(x.ID); !errors.Is(err, ErrUnknown) {
		t.Fatalf("Ack after give-up = %v", err)
	}
	clock.Advance(time.Hour)
	noNext(t, q)
	if st := q.Stats(); st.Failed != 2 || st.Retried != 2 || st.Depth != 0 || st.Delivered != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestOverflowRefuseNew(t *testing.T) {
	q := openQueue(t, openStore(t, t.TempDir()), "r", Options{MaxItems: 3, MaxBytes: 10, Overflow: RefuseNew})
	put(t, q, "aa", "bb", "cc")
	if err := q.Put(context.Background(), []byte("d")); !errors.Is(err, ErrFull) {
		t.Fatalf("4th Put = %v, want ErrFull", err)
	}
	if err := q.Put(context.Background(), []byte("01234567890")); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("big Put = %v, want ErrTooLarge", err)
	}
	it := next(t, q)
	if err := q.Ack(it.ID); err != nil {
		t.Fatal(err)
	}
	// Items: now 2 of 3, bytes 4 of 10.
	if err := q.Put(context.Background(), []byte("1234567")); !errors.Is(err, ErrFull) {
		t.Fatalf("Put over the byte bound = %v, want ErrFull", err)
	}
	put(t, q, "123456")
	if st := q.Stats(); st.Refused != 3 || st.Dropped != 0 || st.Depth != 3 || st.Bytes != 10 {
		t.Fatalf("stats = %+v", st)
	}
	if got := drain(t, q); !slices.Equal(got, []string{"bb", "cc", "123456"}) {
		t.Fatalf("left = %q", got)
	}
}

func TestOverflowDropOldest(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	q := openQueue(t, s, "r", Options{MaxItems: 3})
	put(t, q, "1", "2", "3")
	first := next(t, q) // "1" in flight: the oldest not in flight goes first
	put(t, q, "4", "5")
	if st := q.Stats(); st.Dropped != 2 || st.Depth != 3 || st.Refused != 0 || st.Enqueued != 5 {
		t.Fatalf("stats = %+v", st)
	}
	// Reopened with a smaller bound, the queue drops its oldest again:
	// "1" (in flight before) goes, "4" and "5" stay; "2" and "3" stay gone.
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openQueue(t, s, "r", Options{MaxItems: 2})
	if st := q.Stats(); st.Dropped != 1 || st.Depth != 2 {
		t.Fatalf("stats after reopen = %+v", st)
	}
	if got := drain(t, q); !slices.Equal(got, []string{"4", "5"}) {
		t.Fatalf("after reopen = %q", got)
	}
	_ = first

	// Every stored item in flight: the oldest in-flight one is dropped,
	// and its late Ack says so.
	put(t, q, "6", "7")
	a, b := next(t, q), next(t, q)
	put(t, q, "8")
	if err := q.Ack(a.ID); !errors.Is(err, ErrUnknown) {
		t.Fatalf("Ack of dropped in-flight item = %v, want ErrUnknown", err)
	}
	if err := q.Ack(b.ID); err != nil {
		t.Fatal(err)
	}
	if got := drain(t, q); !slices.Equal(got, []string{"8"}) {
		t.Fatalf("left = %q", got)
	}

	// A burst larger than the queue within one group commit keeps the newest.
	q2 := openQueue(t, s, "burst", Options{MaxItems: 5, MaxBytes: -1})
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := q2.Put(context.Background(), []byte(strconv.Itoa(i))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if st := q2.Stats(); st.Depth != 5 || st.Dropped != 45 || st.Enqueued != 50 {
		t.Fatalf("burst stats = %+v", st)
	}
	if err := q2.Close(); err != nil {
		t.Fatal(err)
	}
	q2 = openQueue(t, s, "burst", Options{MaxItems: 5})
	if got := drain(t, q2); len(got) != 5 {
		t.Fatalf("burst left %q after reopen", got)
	}
}

func TestRestartRecovery(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	q := openQueue(t, s, "r", Options{})
	for i := range 10 {
		put(t, q, strconv.Itoa(i))
	}
	var ids []uint64
	for range 5 {
		ids = append(ids, next(t, q).ID) // 0..4 in flight
	}
	for _, id := range ids[:2] {
		if err := q.Ack(id); err != nil { // 0, 1 delivered
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after store Close = %v", err)
	}

	s = openStore(t, dir)
	q = openQueue(t, s, "r", Options{})
	if st := q.Stats(); st.Depth != 8 || st.Bytes != 8 {
		t.Fatalf("recovered stats = %+v", st)
	}
	want := []string{"2", "3", "4", "5", "6", "7", "8", "9"}
	if got := drain(t, q); !slices.Equal(got, want) {
		t.Fatalf("recovered %q, want %q", got, want)
	}
	// IDs keep growing even though the queue is empty.
	put(t, q, "new")
	if it := next(t, q); it.ID != 11 {
		t.Fatalf("ID after restart = %d, want 11", it.ID)
	}
}

func TestMemoryModeForgets(t *testing.T) {
	q, err := Open(Config{Name: "mem"})
	if err != nil {
		t.Fatal(err)
	}
	put(t, q, "a")
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q, err = Open(Config{Name: "mem"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := q.Close(); err != nil {
			t.Error(err)
		}
	})
	if st := q.Stats(); st.Depth != 0 {
		t.Fatalf("memory queue kept %d items", st.Depth)
	}
}

func TestCloseUnblocks(t *testing.T) {
	q, err := Open(Config{Dir: t.TempDir(), Name: "r"})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := q.Next(context.Background())
			errs <- err
		}()
	}
	time.Sleep(10 * time.Millisecond)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Fatalf("blocked Next = %v, want ErrClosed", err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if err := q.Put(context.Background(), []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close = %v", err)
	}
	if err := q.Ack(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ack after Close = %v", err)
	}
}

func TestCloseDuringPuts(t *testing.T) {
	s, err := OpenStore(t.TempDir(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	q := openQueue(t, s, "r", Options{MaxItems: -1})
	var wg sync.WaitGroup
	var ok atomic.Int64
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				err := q.Put(context.Background(), []byte("x"))
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				ok.Add(1)
			}
		}()
	}
	testwait.For(t, "some puts", func() bool { return ok.Load() > 100 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

func TestSharedStore(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	a := openQueue(t, s, "a", Options{})
	ab := openQueue(t, s, "ab", Options{})
	if _, err := s.Queue("a", Options{}); !errors.Is(err, ErrInUse) {
		t.Fatalf("second open of a = %v", err)
	}
	if _, err := s.Queue("", Options{}); err == nil {
		t.Fatal("empty name accepted")
	}
	put(t, a, "a1", "a2")
	put(t, ab, "ab1")
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a = openQueue(t, s, "a", Options{})
	if got := drain(t, a); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Fatalf("a = %q", got)
	}
	if got := drain(t, ab); !slices.Equal(got, []string{"ab1"}) {
		t.Fatalf("ab = %q", got)
	}
}

func TestGroupCommit(t *testing.T) {
	s := openStore(t, t.TempDir())
	q := openQueue(t, s, "r", Options{MaxItems: -1})
	const n = 2000
	var wg sync.WaitGroup
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 50 {
				if err := q.Put(context.Background(), []byte(strconv.Itoa(i))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	commits := s.commits.Load()
	t.Logf("%d puts from 50 goroutines in %d synced commits", n, commits)
	if commits >= n/2 {
		t.Fatalf("%d commits for %d concurrent puts: not grouped", commits, n)
	}
	if got := drain(t, q); len(got) != n {
		t.Fatalf("%d items, want %d", len(got), n)
	}
}

func TestValidate(t *testing.T) {
	bad := []Options{
		{Overflow: 7},
		{MaxAttempts: -1},
		{MaxInFlight: -1},
		{Backoff: Backoff{Initial: -1}},
		{Backoff: Backoff{Initial: time.Minute, Max: time.Second}},
		{Backoff: Backoff{Multiplier: 0.5}},
		{Backoff: Backoff{Jitter: 1.5}},
	}
	for _, o := range bad {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if err := (Options{}).Validate(); err != nil {
		t.Fatal(err)
	}
	err := Config{Options: Options{MaxAttempts: -1}}.Validate()
	if err == nil || !contains(err.Error(), "name", "max_attempts") {
		t.Fatalf("Config.Validate = %v, want both problems", err)
	}
	for _, s := range []string{"drop_oldest", "refuse_new"} {
		p, err := ParsePolicy(s)
		if err != nil || p.String() != s {
			t.Fatalf("ParsePolicy(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := ParsePolicy("drop"); err == nil {
		t.Fatal("bad policy accepted")
	}
}

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func TestPutCancelled(t *testing.T) {
	q := openQueue(t, openStore(t, ""), "r", Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := q.Put(ctx, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with cancelled ctx = %v", err)
	}
	if _, err := q.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with cancelled ctx = %v", err)
	}
	if st := q.Stats(); st.Depth != 0 || st.Enqueued != 0 {
		t.Fatalf("stats = %+v", st)
	}
}
