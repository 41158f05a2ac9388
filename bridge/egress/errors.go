package egress

import (
	"errors"
	"fmt"
)

// ErrPermanent marks a delivery failure that retrying cannot fix: the
// endpoint answered 4xx / 4.xx, or the message cannot make a valid request.
// The engine fails such a message at once (logged, counted).
var ErrPermanent = errors.New("egress: permanent failure")

// Permanent marks err as permanent (errors.Is(err, ErrPermanent) becomes
// true). A nil err stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string   { return e.err.Error() }
func (e *permanentError) Unwrap() []error { return []error{e.err, ErrPermanent} }

// IsPermanent reports whether err is marked [ErrPermanent].
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// StatusError is an endpoint's answer that is not a success. Retryable is
// true for 5xx / 5.xx (and 429 / 4.29), false for the other 4xx / 4.xx; a
// StatusError that is not retryable is permanent. The engine publishes the
// Response of a permanent StatusError as the reverse reply, so the MQTT
// requester learns the status.
type StatusError struct {
	Response
	// Retryable says whether the engine should try again.
	Retryable bool
}

// Error returns e.g. "endpoint answered 503".
func (e *StatusError) Error() string {
	if len(e.Payload) > 0 && len(e.Payload) <= 200 {
		return fmt.Sprintf("endpoint answered %s: %q", e.Status, e.Payload)
	}
	return "endpoint answered " + e.Status
}

// Is makes errors.Is(err, ErrPermanent) true for a StatusError that is not
// retryable.
func (e *StatusError) Is(target error) bool { return target == ErrPermanent && !e.Retryable }
