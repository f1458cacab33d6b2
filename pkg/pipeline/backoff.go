package pipeline

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Backoff is exponential backoff with full jitter: attempt n waits a uniformly random duration in
// [0, min(Max, Base·2ⁿ)).
type Backoff struct {
	Base, Max time.Duration
}

// Delay returns the wait before retry attempt n (0 for the first retry).
func (b Backoff) Delay(n int) time.Duration {
	ceiling := b.Max
	if n < 32 {
		if d := b.Base << n; d > 0 && d < b.Max {
			ceiling = d
		}
	}
	if ceiling <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(ceiling)))
}

// Sleep waits d or until ctx ends, and reports whether the whole wait passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Retry runs fn until it succeeds or ctx ends, waiting b.Delay between attempts, and returns nil or
// ctx's error. Every tenth failure (the first included) goes to log with what was attempted: what is
// retried forever must still be seen.
func Retry(ctx context.Context, b Backoff, log *slog.Logger, what string, fn func() error) error {
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt%10 == 0 {
			log.Warn("retrying", "what", what, "attempt", attempt+1, "error", err)
		}
		if !Sleep(ctx, b.Delay(attempt)) {
			return ctx.Err()
		}
	}
}
