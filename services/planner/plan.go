package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/jobspec"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// plan is a job split into tasks.
type plan struct {
	jobID string
	// expected is how many records the tasks cover; -1 when the source did not say (open-ended).
	expected int64
	tasks    []*sluicev1.Task
}

// newJobID names a job after its spec and the time it was submitted, with a random suffix:
// job ids are unique per submission, task ids derive from them.
func newJobID(name string, now time.Time) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%s-%s", name, now.UTC().Format("20060102t150405"), hex.EncodeToString(b))
}

// taskID is the deterministic id of a job's task.
func taskID(jobID string, index int) string { return fmt.Sprintf("%s-t%04d", jobID, index) }

// planJob splits a job over its extent. total is the record count the source reported, or -1.
// With neither a total nor max_records the extent is unknown, and one open-ended task pages until
// the first short or empty page.
func planJob(spec *jobspec.Spec, jobID string, total int64, now time.Time) plan {
	n := total
	if spec.Source.MaxRecords > 0 && (n < 0 || uint64(n) > spec.Source.MaxRecords) {
		n = int64(spec.Source.MaxRecords)
	}
	src := spec.SourceProto()
	p := plan{jobID: jobID, expected: n}
	base := func(i, count int) *sluicev1.Task {
		return &sluicev1.Task{JobId: jobID, TaskId: taskID(jobID, i), Index: uint32(i), Count: uint32(count),
			Source: src, Table: spec.Sink.Table, PlannedAt: timestamppb.New(now)}
	}
	if n < 0 {
		t := base(0, 1)
		if spec.Source.Pagination.Type == "page" {
			t.Slice = &sluicev1.Task_Pages{Pages: &sluicev1.PageRange{First: uint64(spec.Source.Pagination.FirstPage), Unbounded: true}}
		} else {
			t.Slice = &sluicev1.Task_Offsets{Offsets: &sluicev1.OffsetRange{Unbounded: true}}
		}
		p.tasks = []*sluicev1.Task{t}
		return p
	}
	size := int64(spec.Source.Pagination.PageSize)
	pages := (n + size - 1) / size
	count := int(min(int64(spec.Tasks), pages))
	for i := range count {
		first := int64(i) * pages / int64(count)
		end := int64(i+1) * pages / int64(count) // pages [first, end)
		t := base(i, count)
		if spec.Source.Pagination.Type == "page" {
			fp := int64(spec.Source.Pagination.FirstPage)
			t.Slice = &sluicev1.Task_Pages{Pages: &sluicev1.PageRange{First: uint64(fp + first), Last: uint64(fp + end - 1)}}
		} else {
			t.Slice = &sluicev1.Task_Offsets{Offsets: &sluicev1.OffsetRange{Start: uint64(first * size), End: uint64(min(end*size, n))}}
		}
		p.tasks = append(p.tasks, t)
	}
	return p
}
