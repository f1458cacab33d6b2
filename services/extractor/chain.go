package main

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/source"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// checkpointWait bounds how long a chain waits for the page before the one at work to be committed
// before it reads further: past it, the member's commits do not keep up, and the next page goes
// through the tasks topic.
const checkpointWait = time.Second

// chain is a crawl that one member reads page after page in process. A crawl's page is its own
// task, published by the page before once that page's records are acknowledged; the member does not
// wait for that task to come back from the tasks topic: it claims it, reads its page while the
// page before is produced, and goes on with it in the same slot. The published task stays the
// checkpoint: its copy, polled like any task, is held until the run in process ends and then
// committed, and a new owner of the partition resumes from it.
//
// The next page is read only once the page before the one at work is committed, so that a member
// killed mid-crawl costs the page being produced and the one being read, never a page it finished.
// A chain ends where the crawl does, after ChainPages pages, at shutdown, when its partition goes,
// and when the member's poll loop waits for a slot and so leaves the copies unpolled (the chain's
// slot is wanted): the next page then goes through the tasks topic like any task.
type chain struct {
	x    *Extractor
	o    *owner
	stop context.Context // ends at shutdown: no further page is read ahead
	// cur is the task at work, prev the one before it (nil for the chain's first).
	cur, prev *kgo.Record
	pages     int
	// ahead is the next page, claimed and being read; running is the page read ahead for cur,
	// until its run takes it.
	ahead, running *ahead
}

// ahead is the next page of a chain: its task, claimed, and its page read or being read.
type ahead struct {
	id  string
	rec *kgo.Record // the task as published; its partition and offset once acknowledged
	src source.Source
	rd  source.Reader
	// decided closes once the chain knows whether it goes on (go): the page before the one at
	// work is committed, or the wait gave up.
	decided chan struct{}
	ok      bool
	// done closes once the page is read or the read gave up; read, more and err are its result.
	done   chan struct{}
	read   source.Read
	more   bool
	err    error
	cancel context.CancelFunc
}

// newChain returns the chain that the task at r may start, nil when chains are off.
func (x *Extractor) newChain(o *owner, stop context.Context, r *kgo.Record) *chain {
	if x.cfg.ChainPages <= 0 {
		return nil
	}
	return &chain{x: x, o: o, stop: stop, cur: r}
}

// readAhead claims the crawl's next task, published later as rec, and starts reading its page
// with src once the page before the current one is checkpointed. It does nothing when the chain
// may not go on.
func (ch *chain) readAhead(task *sluicev1.Task, next *sluicev1.Task, rec *kgo.Record, src source.Source, s *slot) {
	if ch == nil || ch.pages >= ch.x.cfg.ChainPages || ch.stop.Err() != nil || ch.o.ctx.Err() != nil ||
		ch.x.cancelled.Is(task.JobId) {
		return
	}
	rd, err := src.Open(next)
	if err != nil || !ch.x.claims.claim(ch.o, next.TaskId, nil) {
		return // the copy runs it, or fails it, as any task
	}
	ctx, cancel := context.WithCancel(ch.o.ctx)
	a := &ahead{id: next.TaskId, rec: rec, src: src, rd: rd, decided: make(chan struct{}), done: make(chan struct{}), cancel: cancel}
	ch.ahead = a
	limits, prev := src.Limits(), ch.prev
	go func() {
		defer close(a.done)
		a.ok = ch.checkpointed(ctx, prev)
		close(a.decided)
		if !a.ok {
			return
		}
		if a.err = ch.x.wait(ctx, s, limits); a.err != nil {
			return
		}
		a.read, a.more, a.err = rd.Next(ctx)
	}()
}

// checkpointed waits until the task at prev (nil: none) is committed, and reports whether it is.
// It gives up after checkpointWait, and at once while the poll loop waits for a slot: the copies
// are not polled then.
func (ch *chain) checkpointed(ctx context.Context, prev *kgo.Record) bool {
	if prev == nil {
		return true
	}
	k := tp{prev.Topic, prev.Partition}
	timer := time.NewTimer(checkpointWait)
	defer timer.Stop()
	for {
		ok, changed := ch.x.offsets.checkpointed(k, prev.Offset)
		if ok {
			return true
		}
		if ch.x.starved.Load() {
			return false
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		case <-timer.C:
			return false
		}
	}
}

// goesOn waits until the chain knows whether the page read ahead is run in process; when it is
// not, the claim is let go before the page's task is published.
func (ch *chain) goesOn() {
	if ch == nil || ch.ahead == nil {
		return
	}
	<-ch.ahead.decided
	if !ch.ahead.ok {
		ch.drop()
	}
}

// drop gives up the page read ahead: its read is cancelled, and its task runs from the tasks
// topic (a copy that waits for it is abandoned, for the next owner).
func (ch *chain) drop() {
	if ch == nil || ch.ahead == nil {
		return
	}
	a := ch.ahead
	ch.ahead = nil
	a.cancel()
	<-a.done // it may hold the slot: it has given it back when it returns
	ch.x.claims.release(ch.o, a.id, false)
}

// next returns the page read ahead, to run now: the current task ended without err and published
// the page's task on its own partition. Otherwise, and at shutdown (the copy of a page run now
// would not be polled, and runs again on the next member all the same), the page is dropped and
// nil returned.
func (ch *chain) next(err error) *ahead {
	if ch == nil || ch.ahead == nil {
		return nil
	}
	a := ch.ahead
	if err != nil || a.rec.Offset < 0 || a.rec.Partition != ch.cur.Partition || ch.o.ctx.Err() != nil || ch.stop.Err() != nil {
		ch.drop()
		return nil
	}
	ch.ahead, ch.running = nil, a
	ch.prev, ch.cur = ch.cur, a.rec
	ch.pages++
	ch.x.metrics.chained.Inc()
	return a
}

// take returns the page read ahead for the task at r, once read, and forgets it: a run again of
// the task reads its page again.
func (ch *chain) take(r *kgo.Record) *ahead {
	if ch == nil || ch.running == nil || ch.running.rec != r {
		return nil
	}
	a := ch.running
	ch.running = nil
	<-a.done
	a.cancel()
	return a
}

// discard gives up the page read ahead for the run that just ended, when the run did not take it
// (it skipped its task before reading: the job ended).
func (ch *chain) discard() {
	if ch == nil || ch.running == nil {
		return
	}
	a := ch.running
	ch.running = nil
	a.cancel()
	<-a.done
}

// pageAhead is a reader whose first page was read ahead.
type pageAhead struct {
	source.Reader
	a    *ahead
	used bool
}

func (r *pageAhead) Next(ctx context.Context) (source.Read, bool, error) {
	if !r.used {
		r.used = true
		return r.a.read, r.a.more, r.a.err
	}
	return r.Reader.Next(ctx)
}

func (r *pageAhead) More() bool { return !r.used || r.Reader.More() }

// pending reports whether the reader's next page is already read: its rate limit was waited for.
func pending(rd source.Reader) bool {
	r, ok := rd.(*pageAhead)
	return ok && !r.used
}
