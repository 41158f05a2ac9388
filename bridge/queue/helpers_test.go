package queue

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashEnv) != "" {
		// The crash test's child: no leak check, it is killed.
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m)
}

// testLogger logs to the test at Warn and above.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

var _ io.Writer = tWriter{}

// openStore opens a store in dir and closes it when the test ends.
func openStore(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := OpenStore(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func openQueue(t testing.TB, s *Store, name string, o Options) *Queue {
	t.Helper()
	q, err := s.Queue(name, o)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func put(t testing.TB, q *Queue, payloads ...string) {
	t.Helper()
	for _, p := range payloads {
		if err := q.Put(context.Background(), []byte(p)); err != nil {
			t.Fatalf("Put(%q): %v", p, err)
		}
	}
}

// next returns the next item or fails the test after a few seconds.
func next(t testing.TB, q *Queue) Item {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	it, err := q.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return it
}

// noNext asserts that Next has nothing to give for a short while.
func noNext(t testing.TB, q *Queue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if it, err := q.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next = item %d %q, %v; want nothing due", it.ID, it.Payload, err)
	}
}

// drain takes every item due now, acknowledging each, and returns the
// payloads in delivery order.
func drain(t testing.TB, q *Queue) []string {
	t.Helper()
	var out []string
	for q.Stats().Depth > 0 {
		it := next(t, q)
		out = append(out, string(it.Payload))
		if err := q.Ack(it.ID); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// fakeClock is a Clock that moves only when told; its timers fire on
// Advance.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers map[*fakeTimer]struct{}
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), timers: map[*fakeTimer]struct{}{}}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1), at: c.now.Add(d)}
	if d <= 0 {
		t.ch <- c.now
		return t
	}
	c.timers[t] = struct{}{}
	return t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for t := range c.timers {
		if !t.at.After(c.now) {
			delete(c.timers, t)
			t.ch <- c.now
		}
	}
}

// waiting reports how many timers are pending.
func (c *fakeClock) waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

type fakeTimer struct {
	c  *fakeClock
	ch chan time.Time
	at time.Time
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	_, ok := t.c.timers[t]
	delete(t.c.timers, t)
	return ok
}
