package main

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestFolded waits until every partition is folded up to its end, and no longer than its context.
func TestFolded(t *testing.T) {
	f := newFolded()
	if err := f.wait(context.Background(), nil); err != nil {
		t.Fatalf("nothing to wait for: %v", err)
	}
	f.advance(0, 5)
	f.advance(0, 3) // an older position changes nothing
	if err := f.wait(context.Background(), map[int32]int64{0: 5}); err != nil {
		t.Fatalf("partition 0 is folded to 5: %v", err)
	}
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := f.wait(short, map[int32]int64{0: 6}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("partition 0 behind its end: %v, want the context's deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- f.wait(context.Background(), map[int32]int64{0: 6, 1: 2}) }()
	f.advance(0, 6)
	select {
	case err := <-done:
		t.Fatalf("returned (%v) with partition 1 still behind", err)
	default:
	}
	f.advance(1, 2)
	if err := <-done; err != nil {
		t.Fatalf("both partitions folded to their ends: %v", err)
	}
}
