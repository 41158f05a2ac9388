package queue

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"
)

// Policy says what Put does when a queue is at MaxItems or MaxBytes.
type Policy int

const (
	// DropOldest accepts every Put and then deletes the oldest item not
	// being delivered, or, when that would be one of the items just put, the
	// oldest in-flight item (its later Ack, Retry or Fail returns
	// ErrUnknown), until the queue is within its bounds again. Each victim
	// is counted in Stats.Dropped.
	DropOldest Policy = iota
	// RefuseNew makes Put return ErrFull, counted in Stats.Refused.
	RefuseNew
)

// String returns the policy's configuration name.
func (p Policy) String() string {
	switch p {
	case DropOldest:
		return "drop_oldest"
	case RefuseNew:
		return "refuse_new"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// ParsePolicy turns a configuration name ("drop_oldest", "refuse_new") into
// a Policy.
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "drop_oldest":
		return DropOldest, nil
	case "refuse_new":
		return RefuseNew, nil
	}
	return 0, fmt.Errorf("queue: overflow policy %q: want drop_oldest or refuse_new", s)
}

// Backoff shapes the wait before an item that failed is offered again.
// The n-th retry (n ≥ 1) waits Initial·Multiplier^(n-1), capped at Max, then
// shortened by a random fraction of up to Jitter ("0.2" = up to 20 % less),
// so routes that failed together do not retry in lockstep and no wait is
// ever longer than Max.
type Backoff struct {
	Initial    time.Duration // first wait; default 1s
	Max        time.Duration // longest wait; default 1m
	Multiplier float64       // growth per retry, ≥ 1; default 2
	Jitter     float64       // 0 to 1; 0 means none (0.2 suits most routes)
}

// Delay returns the wait before retry number attempt (1 for the first
// retry) for a random number r in [0, 1).
func (b Backoff) Delay(attempt int, r float64) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := float64(b.Initial) * math.Pow(b.Multiplier, float64(attempt-1))
	if d > float64(b.Max) || math.IsInf(d, 0) || math.IsNaN(d) {
		d = float64(b.Max)
	}
	d *= 1 - b.Jitter*r
	return time.Duration(d)
}

// Options configures one queue. The zero value is usable: each zero field
// takes the default its comment gives.
type Options struct {
	// MaxItems bounds the number of stored items (waiting and in flight).
	// Default 10,000; negative means no bound.
	MaxItems int
	// MaxBytes bounds the sum of stored payload sizes. Default 64 MiB;
	// negative means no bound. A payload larger than MaxBytes is refused
	// with ErrTooLarge whatever the policy.
	MaxBytes int64
	// Overflow is what Put does at a bound; default DropOldest.
	Overflow Policy
	// Backoff shapes retry delays.
	Backoff Backoff
	// MaxAttempts is how many deliveries an item gets: the Retry that would
	// exceed it drops the item as failed. 0 means unlimited.
	MaxAttempts int
	// Ordered delivers strictly one at a time in ID order: Next hands out
	// the head only, and only when nothing is in flight, so a retried head
	// holds back every later item until it is acknowledged or given up.
	Ordered bool
	// MaxInFlight bounds the items handed out by Next and not yet
	// acknowledged (ignored when Ordered). 0 means no bound other than the
	// number of callers of Next.
	MaxInFlight int
	// Clock gives the time for NotBefore and Enqueued and the timers Next
	// waits on; nil is the system clock. Tests inject their own.
	Clock Clock
}

// Validate reports every problem with the options at once.
func (o Options) Validate() error {
	var errs []error
	if o.Overflow != DropOldest && o.Overflow != RefuseNew {
		errs = append(errs, fmt.Errorf("overflow: unknown policy %d", int(o.Overflow)))
	}
	if o.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("max_attempts: %d is negative", o.MaxAttempts))
	}
	if o.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("max_in_flight: %d is negative", o.MaxInFlight))
	}
	b := o.Backoff
	if b.Initial < 0 || b.Max < 0 {
		errs = append(errs, errors.New("backoff: durations must not be negative"))
	}
	if b.Initial > 0 && b.Max > 0 && b.Initial > b.Max {
		errs = append(errs, fmt.Errorf("backoff: initial %v is longer than max %v", b.Initial, b.Max))
	}
	if b.Multiplier != 0 && (b.Multiplier < 1 || math.IsNaN(b.Multiplier) || math.IsInf(b.Multiplier, 0)) {
		errs = append(errs, fmt.Errorf("backoff: multiplier %v must be at least 1", b.Multiplier))
	}
	if b.Jitter < 0 || b.Jitter > 1 || math.IsNaN(b.Jitter) {
		errs = append(errs, fmt.Errorf("backoff: jitter %v must be between 0 and 1", b.Jitter))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("queue options: %w", errors.Join(errs...))
}

// withDefaults fills the zero fields.
func (o Options) withDefaults() Options {
	if o.MaxItems == 0 {
		o.MaxItems = 10_000
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = 64 << 20
	}
	b := &o.Backoff
	if b.Initial == 0 {
		b.Initial = time.Second
	}
	if b.Max == 0 {
		b.Max = time.Minute
		if b.Initial > b.Max {
			b.Max = b.Initial
		}
	}
	if b.Multiplier == 0 {
		b.Multiplier = 2
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	return o
}

// Config opens a queue with a store of its own (see Open).
type Config struct {
	// Dir is the pebble directory; "" keeps the queue in memory (same
	// behaviour, nothing survives the process).
	Dir string
	// Name identifies the queue inside the store (1 to 255 bytes), usually
	// the route's name.
	Name string
	// Logger receives pebble's messages and the queue's warnings; nil
	// discards them.
	Logger *slog.Logger
	// Options configures the queue.
	Options Options
}

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if err := validName(c.Name); err != nil {
		errs = append(errs, err)
	}
	if err := c.Options.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func validName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("queue name %q: want 1 to 255 bytes", name)
	}
	return nil
}

// Clock is the time source of a queue.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTimer returns a timer that fires once after d.
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer made by a Clock.
type Timer interface {
	// C returns the channel the timer fires on.
	C() <-chan time.Time
	// Stop stops the timer; it reports whether that prevented it firing.
	Stop() bool
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) Timer { return sysTimer{time.NewTimer(d)} }

type sysTimer struct{ t *time.Timer }

func (t sysTimer) C() <-chan time.Time { return t.t.C }
func (t sysTimer) Stop() bool          { return t.t.Stop() }
