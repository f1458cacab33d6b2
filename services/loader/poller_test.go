package main

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestPollerOwnership: a record belongs to the ownership of its partition it was polled in; once
// the partition is dropped (revoked, lost), and even once it is assigned again, it is no longer
// this ownership's.
func TestPollerOwnership(t *testing.T) {
	p := newPoller("raw")
	s := p.take(&kgo.Record{Partition: 3, Offset: 41})
	if s.start != 41 || s.next != 42 || s.committed != -1 {
		t.Fatalf("ownership %+v after its first record", s)
	}
	if p.take(&kgo.Record{Partition: 3, Offset: 42}) != s || s.next != 43 {
		t.Fatal("a second record of the partition made another ownership")
	}
	it := &item{partition: 3, offset: 42, owner: s}
	if !p.owns(it) {
		t.Fatal("the record is not of the current ownership")
	}
	if gone := p.drop([]int32{3}); !gone[3] || p.owns(it) {
		t.Fatal("the record is still owned after its partition was dropped")
	}
	p.take(&kgo.Record{Partition: 3, Offset: 42}) // assigned again, redelivered
	if p.owns(it) {
		t.Fatal("a record of the last ownership is owned by the next")
	}
}

// TestPollerPausesAndWakes polls a kfake topic: a paused partition is not fetched until resumed,
// and a poll that is woken returns at once with what it has.
func TestPollerPausesAndWakes(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "raw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("raw"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.FetchMaxWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	p := newPoller("raw")
	p.cl = cl
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p.pause([]int32{0})
	for _, part := range []int32{0, 1} {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "raw", Partition: part, Value: []byte("x")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	never := func(ctx context.Context) (context.Context, func()) { return context.WithCancel(ctx) }
	if recs := p.poll(ctx, 10, never); len(recs) != 1 || recs[0].Partition != 1 {
		t.Fatalf("polled %d records while partition 0 was paused", len(recs))
	}
	p.resume()
	if recs := p.poll(ctx, 10, never); len(recs) != 1 || recs[0].Partition != 0 {
		t.Fatalf("polled %d records after partition 0 was resumed", len(recs))
	}
	woken := func(ctx context.Context) (context.Context, func()) {
		c, cancel := context.WithCancel(ctx)
		cancel()
		return c, cancel
	}
	if recs := p.poll(ctx, 10, woken); len(recs) != 0 || ctx.Err() != nil {
		t.Fatalf("a woken poll returned %d records, %v", len(recs), ctx.Err())
	}
}

// TestFlightsWake: a flight that lands wakes the poll or wait in progress, and one that landed
// between two of them wakes the next at once; landed returns it once.
func TestFlightsWake(t *testing.T) {
	f := newFlights(time.Second)
	release := make(chan struct{})
	f.launch(&tablePlan{}, func(ctx context.Context) insertResult {
		<-release
		return insertResult{units: 1}
	})
	ctx, done := f.wakeable(context.Background(), time.Time{})
	if ctx.Err() != nil || len(f.flying()) != 1 {
		t.Fatal("woken before the flight landed")
	}
	close(release)
	<-ctx.Done()
	done()
	if err := wait(context.Background(), f.flying()); err != nil {
		t.Fatal(err)
	}
	ctx, done = f.wakeable(context.Background(), time.Time{}) // it landed since the flights were looked at
	if ctx.Err() == nil {
		t.Fatal("a landing between two polls was missed")
	}
	done()
	if got := f.landed(); len(got) != 1 || got[0].res.units != 1 || len(f.inAir) != 0 {
		t.Fatalf("landed %d flights", len(got))
	}
	ctx, done = f.wakeable(context.Background(), time.Time{})
	defer done()
	if ctx.Err() != nil {
		t.Fatal("woken again by a landing already looked at")
	}
}
