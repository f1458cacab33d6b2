package main

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicedata/sluice/pkg/pipeline"
)

// TestParkGivesTheSlotBack: a task waiting for its rate limit holds no slot meanwhile, and holds one
// again when the wait is over.
func TestParkGivesTheSlotBack(t *testing.T) {
	reg := prometheus.NewRegistry()
	x := &Extractor{metrics: newExtractorMetrics(reg, pipeline.NewMetrics(reg)), unparked: make(chan struct{}, 1)}
	slots := make(chan struct{}, 1)
	slots <- struct{}{}
	s := &slot{ch: slots, held: true}
	err := x.park(context.Background(), s, func(context.Context) error {
		select {
		case slots <- struct{}{}: // another task can take the slot
			<-slots
		default:
			t.Fatal("the slot was not given back while waiting")
		}
		return nil
	})
	if err != nil || !s.held || len(slots) != 1 {
		t.Fatalf("after the wait: err %v, held %v, %d of 1 slots taken", err, s.held, len(slots))
	}
}

// TestAdmitCapsAJob: a job capped at one task lets the second in only once the first left, and the
// second waits without the member's slot.
func TestAdmitCapsAJob(t *testing.T) {
	reg := prometheus.NewRegistry()
	x := &Extractor{metrics: newExtractorMetrics(reg, pipeline.NewMetrics(reg)), jobSlots: map[string]chan struct{}{},
		unparked: make(chan struct{}, 1)}
	slots := make(chan struct{}, 2)
	slots <- struct{}{}
	slots <- struct{}{}
	first, second := &slot{ch: slots, held: true}, &slot{ch: slots, held: true}
	leave, err := x.admit(context.Background(), first, "job", 1)
	if err != nil {
		t.Fatal(err)
	}
	admitted := make(chan func())
	go func() {
		leave2, err := x.admit(context.Background(), second, "job", 1)
		if err != nil {
			t.Error(err)
		}
		admitted <- leave2
	}()
	// The second task gives its slot back while it waits: another task can take it.
	slots <- struct{}{}
	<-slots
	select {
	case <-admitted:
		t.Fatal("a second task of a job capped at one was let in")
	default:
	}
	leave()
	(<-admitted)()
	if !second.held {
		t.Fatal("the admitted task does not hold a slot")
	}
}
