package pipeline

import (
	"context"
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
