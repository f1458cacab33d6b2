package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sluicedata/sluice/pkg/pipeline"
)

// ErrDeadline is an operation given up because its next retry would pass the policy's deadline.
var ErrDeadline = errors.New("the next retry would pass the deadline")

// Policy is how long one operation is retried.
type Policy struct {
	Backoff pipeline.Backoff
	// MaxAttempts bounds the attempts in all, the first one included; 0 retries until ctx ends.
	MaxAttempts int
	// Deadline bounds all attempts and the waits between them; 0 sets no bound.
	Deadline time.Duration
}

// Retrier runs operations under a policy and counts every retry in one set of metrics, whatever
// the stage and the operation.
type Retrier struct {
	retries      *prometheus.CounterVec
	waits        *prometheus.CounterVec
	waitSeconds  *prometheus.CounterVec
	log          *slog.Logger
	now          func() time.Time
	sleep        func(context.Context, time.Duration) bool
	unboundedLog int // log every unboundedLog-th retry of an operation without a bound
}

// NewRetrier registers the retry metrics on reg.
func NewRetrier(reg prometheus.Registerer, log *slog.Logger) *Retrier {
	f := promauto.With(reg)
	return &Retrier{
		retries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pipeline_retries_total",
			Help: "Operations retried, by operation (fetch, produce, insert, dead_letter, event, commit, task) and reason.",
		}, []string{"op", "reason"}),
		waits: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pipeline_retry_after_waits_total",
			Help: "Retries that waited for the other side's Retry-After, by operation.",
		}, []string{"op"}),
		waitSeconds: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pipeline_retry_after_seconds_total",
			Help: "Seconds the other side asked to wait before a retry, by operation.",
		}, []string{"op"}),
		log:          log,
		now:          time.Now,
		sleep:        pipeline.Sleep,
		unboundedLog: 10,
	}
}

// Do runs fn until it returns nil or an error that is not transient, the policy runs out, or ctx
// ends; attempt counts from 0. It returns the attempts made and the last error, which keeps its
// class: a transient error that ran out of attempts is still transient, and the caller decides what
// that means for its unit of work. Retries of an operation without a bound are logged now and then:
// what may be retried forever must still be seen.
func (r *Retrier) Do(ctx context.Context, op string, pol Policy, fn func(attempt int) error) (int, error) {
	var deadline time.Time
	if pol.Deadline > 0 {
		deadline = r.now().Add(pol.Deadline)
	}
	for attempt := 0; ; attempt++ {
		err := fn(attempt)
		if err == nil {
			return attempt + 1, nil
		}
		if ctx.Err() != nil {
			return attempt + 1, ctx.Err()
		}
		if ClassOf(err) != Transient || (pol.MaxAttempts > 0 && attempt+1 >= pol.MaxAttempts) {
			return attempt + 1, err
		}
		wait := pol.Backoff.Delay(attempt)
		if ra := retryAfter(err); ra > 0 {
			r.waits.WithLabelValues(op).Inc()
			r.waitSeconds.WithLabelValues(op).Add(ra.Seconds())
			wait = max(wait, ra)
		}
		if !deadline.IsZero() && r.now().Add(wait).After(deadline) {
			return attempt + 1, fmt.Errorf("%w; %w of %s", err, ErrDeadline, pol.Deadline)
		}
		reason := ReasonOf(err)
		r.retries.WithLabelValues(op, reason).Inc()
		if pol.MaxAttempts == 0 && pol.Deadline == 0 && attempt%r.unboundedLog == 0 {
			r.log.Warn("retrying", "op", op, "attempt", attempt+1, "reason", reason, "error", err)
		}
		if !r.sleep(ctx, wait) {
			return attempt + 1, ctx.Err()
		}
	}
}
