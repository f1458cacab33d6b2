package main

import (
	"context"
	"io"
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
	// done closes once the page is read, or once the read gave up or was left to the page's run
	// (fetched false); read, more and err are its result.
	done    chan struct{}
	fetched bool
	read    source.Read
	more    bool
	err     error
	cancel  context.CancelFunc
	// leave lets the next task of the job in: the page before passed its slot of the job's cap on
	// to this one, so that the job has no more pages at work than its cap while this one is read.
	leave func()
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
// may not go on. The read holds no work slot of its own: the page at work holds one, and the read
// is made only when the job's rate limit lets a request go now; otherwise the page's run waits
// for it with its slot, as any run does.
func (ch *chain) readAhead(task *sluicev1.Task, next *sluicev1.Task, rec *kgo.Record, src source.Source) {
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
		if !a.ok || !ch.x.paced(limits) {
			return
		}
		a.fetched = true
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
// topic. A copy of the task that waits for it is handed over with the partition when the chain
// ends for a revocation or a shutdown, and runs itself otherwise.
func (ch *chain) drop() {
	if ch == nil || ch.ahead == nil {
		return
	}
	a := ch.ahead
	ch.ahead = nil
	a.end()
	how := givenUp
	if ch.o.ctx.Err() != nil || ch.stop.Err() != nil {
		how = handedOver
	}
	ch.x.claims.release(ch.o, a.id, how)
}

// keep passes the run's slot of its job's cap (its leave) on to the page read ahead, which runs
// next in process, and returns what the run lets go of at its end instead.
func (ch *chain) keep(leave func()) func() {
	if ch == nil || ch.ahead == nil {
		return leave
	}
	ch.ahead.leave = leave
	return func() {}
}

// end stops the read, waits for it, and gives back what the page holds: the job's cap slot and
// the reader.
func (a *ahead) end() {
	a.cancel()
	<-a.done
	if a.leave != nil {
		a.leave()
		a.leave = nil
	}
	if c, ok := a.rd.(io.Closer); ok {
		c.Close()
	}
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

// take returns the page read ahead for the task at r, once its read ended, and forgets it: a run
// again of the task reads its page again. The run goes on with the page's reader and cap slot.
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
	a.end()
}

// reader returns the reader of the page read ahead: its first page is the one read, when it was.
func (a *ahead) reader() source.Reader {
	if !a.fetched {
		return a.rd
	}
	return &pageAhead{Reader: a.rd, a: a}
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

// Close closes the reader under it, when it holds something (a postgres COPY's connection).
func (r *pageAhead) Close() error {
	if c, ok := r.Reader.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// pending reports whether the reader's next page is already read: its rate limit was waited for.
func pending(rd source.Reader) bool {
	r, ok := rd.(*pageAhead)
	return ok && !r.used
}
