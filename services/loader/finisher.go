package main

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/dlq"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// finisher finishes what the steps did, through the delivery core in its one safe order: dead
// letters acknowledged, then job events, then the commit. What a step could not finish waits in
// unfinished, and the next step's joins it, so that nothing is committed before it is and no
// letter is lost. The Loader's mu guards it.
type finisher struct {
	core   *delivery.Core
	topics topics
	// maxRecordBytes bounds the payload a letter keeps (a stub with size and sha256 past it).
	maxRecordBytes int
	now            func() time.Time
	doing          func(string)
	// commit commits what is done, once everything before it is acknowledged.
	commit     func(ctx context.Context) error
	unfinished *delivery.Outcome
	// fatal is a record that could not get a dead letter: the member stops without committing.
	fatal error
}

type topics struct{ raw, dlq string }

// batch is what one step did: the records it finished and how, and the events that say so.
type batch struct {
	letters []*kgo.Record
	spans   map[span]*spanCount
	events  []*sluicev1.JobEvent
	// landed is set when a flight landed: the commit may move.
	landed bool
}

func newBatch() *batch { return &batch{spans: map[span]*spanCount{}} }

// empty reports whether b finished nothing: there is nothing to write, and the commit cannot move.
func (b *batch) empty() bool {
	return len(b.letters) == 0 && len(b.events) == 0 && len(b.spans) == 0 && !b.landed
}

// finish writes b's dead letters and events and commits what is done, after what an earlier step
// could not finish.
func (f *finisher) finish(ctx context.Context, b *batch) error {
	out := f.unfinished
	if !b.empty() {
		if out == nil {
			out = &delivery.Outcome{Commit: f.commit}
		}
		out.Letters = append(out.Letters, b.letters...)
		out.Events = append(append(out.Events, spanEvents(b.spans)...), b.events...)
	}
	if out == nil {
		return nil
	}
	f.unfinished = out
	f.doing(fmt.Sprintf("writing %d dead letters, %d job events and the commit", len(out.Letters), len(out.Events)))
	if err := f.core.Finish(ctx, out); err != nil {
		return err
	}
	f.unfinished = nil
	return nil
}

// letter adds the dead letter of it to b, counted for its job.
func (f *finisher) letter(b *batch, it *item, class string, err error) error {
	// The envelope without its payload goes with the letter, for a replay; one that does not decode
	// (the letter's cause, then) stays out, and the letter keeps the raw message instead (a nil
	// payload). A record whose payload is empty keeps it empty.
	var env sluicev1.Record
	envelope, payload := &env, it.payload
	if proto.Unmarshal(it.raw, &env) != nil {
		envelope = nil
	} else if env.Payload = nil; payload == nil {
		payload = []byte{}
	}
	letter, lerr := dlq.Record(f.topics.dlq, dlq.Letter{
		Stage: sluicev1.DeadLetter_STAGE_LOAD, ErrorClass: class, Err: err, Attempts: 1,
		JobID: it.job, TaskID: it.task, Payload: payload, FailedAt: f.now(), Record: envelope,
		Original: &kgo.Record{Topic: f.topics.raw, Partition: it.partition, Offset: it.offset, Key: it.rawKey, Value: it.raw},
	}, f.maxRecordBytes)
	if lerr != nil {
		return delivery.New(delivery.Fatal, "bad_letter", lerr)
	}
	b.letters = append(b.letters, letter)
	s := b.count(it)
	if s.dead[class] == nil {
		s.dead[class] = &offsets{}
	}
	s.dead[class].add(it.offset)
	return nil
}
