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
	x := &Extractor{metrics: newExtractorMetrics(reg, pipeline.NewMetrics(reg))}
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
