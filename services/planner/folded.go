package main

import (
	"context"
	"sync"
)

// folded records how far the planner has folded each partition of the events topic, so that a
// decision that must see every event written before it was asked (a cancel) can wait for them.
type folded struct {
	mu   sync.Mutex
	next map[int32]int64
	// moved is closed, and replaced, each time a partition moves on.
	moved chan struct{}
}

func newFolded() *folded {
	return &folded{next: map[int32]int64{}, moved: make(chan struct{})}
}

// advance records that partition is folded up to next, the offset after the last event folded.
func (f *folded) advance(partition int32, next int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if next <= f.next[partition] {
		return
	}
	f.next[partition] = next
	close(f.moved)
	f.moved = make(chan struct{})
}

// wait returns once every partition in ends is folded up to its end offset there, or with the
// context's error.
func (f *folded) wait(ctx context.Context, ends map[int32]int64) error {
	for {
		f.mu.Lock()
		behind, moved := false, f.moved
		for partition, end := range ends {
			behind = behind || f.next[partition] < end
		}
		f.mu.Unlock()
		if !behind {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-moved:
		}
	}
}
