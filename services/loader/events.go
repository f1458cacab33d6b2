package main

import (
	"github.com/sluicedata/sluice/pkg/pipeline"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// span is the part of a batch that belongs to one run of one task in one partition, for the job's
// events.
type span struct {
	job, task, run string
	partition      int32
}

type spanCount struct {
	table       string
	first, last int64
	loaded      offsets
	dead        map[string]*offsets // by error class
}

// offsets are a partition's offsets as runs of consecutive offsets, in the order they were added.
type offsets struct {
	spans []*sluicev1.OffsetSpan
	n     uint64
}

func (o *offsets) add(offset int64) {
	o.n++
	if k := len(o.spans); k > 0 && o.spans[k-1].Last+1 == offset {
		o.spans[k-1].Last = offset
		return
	}
	o.spans = append(o.spans, &sluicev1.OffsetSpan{First: offset, Last: offset})
}

// count returns the tally of it's span in the batch.
func (b *batch) count(it *item) *spanCount {
	k := span{it.job, it.task, it.run, it.partition}
	s := b.spans[k]
	if s == nil {
		s = &spanCount{table: it.table, first: it.offset, last: it.offset, dead: map[string]*offsets{}}
		b.spans[k] = s
	}
	s.first, s.last = min(s.first, it.offset), max(s.last, it.offset)
	return s
}

// maxEventSpans bounds the offset spans of one event, so that an event of a batch with many gaps
// stays far below the events topic's message limit.
const maxEventSpans = 4096

func spanEvents(spans map[span]*spanCount) []*sluicev1.JobEvent {
	var evs []*sluicev1.JobEvent
	for k, s := range spans {
		if k.job == "" {
			continue // not a sluice record: counted in metrics only
		}
		for chunk := range chunks(s.loaded.spans) {
			evs = append(evs, &sluicev1.JobEvent{JobId: k.job, Producer: "loader", Event: &sluicev1.JobEvent_RecordsLoaded{
				RecordsLoaded: &sluicev1.RecordsLoaded{Records: spanned(chunk), Table: s.table, Partition: k.partition,
					FirstOffset: s.first, LastOffset: s.last, TaskId: k.task, Run: k.run, Offsets: chunk}}})
		}
		for class, o := range s.dead {
			for chunk := range chunks(o.spans) {
				evs = append(evs, &sluicev1.JobEvent{JobId: k.job, Producer: "loader", Event: &sluicev1.JobEvent_RecordsDeadLettered{
					RecordsDeadLettered: &sluicev1.RecordsDeadLettered{Records: spanned(chunk), ErrorClass: class, Partition: k.partition,
						FirstOffset: s.first, LastOffset: s.last, TaskId: k.task, Run: k.run, Offsets: chunk}}})
			}
		}
	}
	return evs
}

// chunks yields spans maxEventSpans at a time.
func chunks(spans []*sluicev1.OffsetSpan) func(func([]*sluicev1.OffsetSpan) bool) {
	return func(yield func([]*sluicev1.OffsetSpan) bool) {
		for len(spans) > 0 {
			n := min(len(spans), maxEventSpans)
			if !yield(spans[:n]) {
				return
			}
			spans = spans[n:]
		}
	}
}

// spanned counts the offsets of spans.
func spanned(spans []*sluicev1.OffsetSpan) uint64 {
	var n uint64
	for _, s := range spans {
		n += uint64(s.Last - s.First + 1)
	}
	return n
}

// observe counts what b finished, per partition and dead-letter class.
func (m *loaderMetrics) observe(b *batch) {
	type pc struct{ loaded, dead float64 }
	perPartition := map[int32]*pc{}
	deadByClass := map[string]float64{}
	for k, s := range b.spans {
		p := perPartition[k.partition]
		if p == nil {
			p = &pc{}
			perPartition[k.partition] = p
		}
		p.loaded += float64(s.loaded.n)
		for class, o := range s.dead {
			p.dead += float64(o.n)
			deadByClass[class] += float64(o.n)
		}
	}
	for partition, c := range perPartition {
		label := pipeline.Partition(partition)
		m.Processed.WithLabelValues(label, pipeline.StatusLoaded).Add(c.loaded)
		m.Processed.WithLabelValues(label, pipeline.StatusDeadLettered).Add(c.dead)
	}
	for class, n := range deadByClass {
		m.DeadLetters.WithLabelValues("load", class).Add(n)
	}
}
