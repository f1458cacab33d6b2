package delivery

import (
	"context"
	"errors"
	"time"
)

// Class says what to do about a failure.
type Class uint8

const (
	// Transient failures are retried with backoff; nothing is dead-lettered or committed meanwhile.
	Transient Class = iota
	// Data failures are caused by the input itself: it is dead-lettered, its neighbours go on.
	Data
	// Schema failures are healthy input that the target refuses (a missing or different table): it
	// is held and reported, and dead-lettered only after a grace period.
	Schema
	// Fatal failures mean the member cannot do its work at all (an unknown topic, a denied
	// authorization): it stops with the reason instead of retrying.
	Fatal
)

func (c Class) String() string {
	switch c {
	case Data:
		return "data"
	case Schema:
		return "schema"
	case Fatal:
		return "fatal"
	default:
		return "transient"
	}
}

// Error is a failure with its class. Reason names it from a small fixed set (http_5xx, network,
// too_many_parts, …): it is the metric label and the dead letter's error class.
type Error struct {
	Class  Class
	Reason string
	// RetryAfter is the least wait before the next attempt that the other side asked for.
	RetryAfter time.Duration
	Err        error
}

// New returns err with its class and reason.
func New(class Class, reason string, err error) *Error {
	return &Error{Class: class, Reason: reason, Err: err}
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ClassOf returns the class of the first *Error in err's chain. An error without a class is
// transient: retrying healthy input is safe, dead-lettering it is not.
func ClassOf(err error) Class {
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return Transient
}

// ReasonOf returns the reason of the first *Error in err's chain, "canceled" or "timeout" for a
// context's end, and "other" for anything else.
func ReasonOf(err error) string {
	var e *Error
	switch {
	case errors.As(err, &e) && e.Reason != "":
		return e.Reason
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "other"
	}
}

// retryAfter returns the wait that err asks for, 0 when none.
func retryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}
