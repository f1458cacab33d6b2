package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// flights are the tables' inserts in the air: each table's blocks are inserted off the loop, so
// that the loop goes on polling, and the other tables go on inserting, while one table is slow. A
// flight that is done counts itself in landings and calls wake, which ends the poll or the wait in
// progress; applied is landings when the flights were last looked at, so that a landing between
// two polls is not missed either. inAir is guarded by the Loader's mu.
type flights struct {
	// ctx is the flights' own (Run's drain context): it outlives Run's context by the drain
	// timeout. timeout bounds one flight's inserts.
	ctx      context.Context
	timeout  time.Duration
	inAir    []*flight
	landings atomic.Int64
	applied  atomic.Int64
	wakeMu   sync.Mutex
	wake     context.CancelFunc
}

// flight is one table's blocks being inserted.
type flight struct {
	tp   *tablePlan
	res  insertResult
	done chan struct{}
}

func newFlights(timeout time.Duration) *flights {
	return &flights{ctx: context.Background(), timeout: timeout}
}

// launch starts a flight of tp that fly inserts. The caller holds the Loader's mu; fly runs
// without it, and must read nothing that the loop or the rebalance callbacks change.
func (f *flights) launch(tp *tablePlan, fly func(ctx context.Context) insertResult) {
	fl := &flight{tp: tp, done: make(chan struct{})}
	f.inAir = append(f.inAir, fl)
	ctx, cancel := context.WithTimeout(f.ctx, f.timeout)
	go func() {
		defer cancel()
		began := time.Now()
		fl.res = fly(ctx)
		fl.res.took = time.Since(began)
		close(fl.done) // before it is counted: the step that counts it finds the flight done
		f.landings.Add(1)
		f.wakeMu.Lock()
		if f.wake != nil {
			f.wake()
		}
		f.wakeMu.Unlock()
	}()
}

// landed returns the flights that are done, which leave the air. The caller holds the Loader's mu.
func (f *flights) landed() []*flight {
	f.applied.Store(f.landings.Load())
	var out []*flight
	keep := f.inAir[:0]
	for _, fl := range f.inAir {
		select {
		case <-fl.done:
			out = append(out, fl)
		default:
			keep = append(keep, fl)
		}
	}
	clear(f.inAir[len(keep):])
	f.inAir = keep
	return out
}

// flying returns the flights not done yet. The caller holds the Loader's mu.
func (f *flights) flying() []*flight {
	var out []*flight
	for _, fl := range f.inAir {
		select {
		case <-fl.done:
		default:
			out = append(out, fl)
		}
	}
	return out
}

// wait waits, while ctx lasts, until the flights all are done.
func wait(ctx context.Context, flying []*flight) error {
	for _, fl := range flying {
		select {
		case <-fl.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// sleep waits until at (for ever when zero), a flight lands, or ctx ends.
func (f *flights) sleep(ctx context.Context, at time.Time) {
	ctx, done := f.wakeable(ctx, at)
	defer done()
	<-ctx.Done()
}

// wakeable returns a context that ends with ctx, at at (never when zero), or when a flight lands
// (or has landed since the flights were last looked at), and a func that releases it.
func (f *flights) wakeable(ctx context.Context, at time.Time) (context.Context, func()) {
	c, cancel := context.WithCancel(ctx)
	if !at.IsZero() {
		cancel()
		c, cancel = context.WithDeadline(ctx, at)
	}
	f.wakeMu.Lock()
	f.wake = cancel
	f.wakeMu.Unlock()
	if f.landings.Load() != f.applied.Load() { // after wake is set: a flight either sees it or is counted here
		cancel()
	}
	return c, func() {
		f.wakeMu.Lock()
		f.wake = nil
		f.wakeMu.Unlock()
		cancel()
	}
}
