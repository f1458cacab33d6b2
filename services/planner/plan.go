package main

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/events"
	"github.com/sluicedata/sluice/pkg/jobspec"
	"github.com/sluicedata/sluice/pkg/source"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// plan is a job split into tasks.
type plan struct {
	jobID string
	// expected is how many records the tasks cover; -1 when the source did not say (open-ended).
	expected int64
	// extent is what the source's planning found, to plan again from.
	extent []byte
	tasks  []*sluicev1.Task
	// source is the job's source when its tasks reference it (sourceRef, its key on the jobs
	// topic) instead of carrying it.
	source    *sluicev1.Source
	sourceRef string
}

// MaxInlineSource is the largest source (encoded) that travels in every task. A larger one (a spec
// with many or long headers) would multiply by the task count (10,000 tasks of 400 KiB are 3.8 GiB
// on the tasks topic): it is stored once, on the compacted jobs topic, and the tasks name it.
const MaxInlineSource = 4 << 10

// sourceRef is the key on the jobs topic of a job's source.
func sourceRef(jobID string) string { return events.SourcePrefix + jobID }

// taskID is the deterministic id of a job's task.
func taskID(jobID string, index int) string { return fmt.Sprintf("%s-t%04d", jobID, index) }

// planTasks makes the tasks of a job from its source's plan: one per slice, with ids that derive
// from the job's, each carrying src, or naming it when it is larger than MaxInlineSource.
func planTasks(spec *jobspec.Spec, src *sluicev1.Source, schemaID, jobID string, sp source.Plan, now time.Time) plan {
	p := plan{jobID: jobID, expected: sp.Expected, extent: sp.Extent, tasks: make([]*sluicev1.Task, 0, len(sp.Slices))}
	inline := src
	if proto.Size(src) > MaxInlineSource {
		p.source, p.sourceRef, inline = src, sourceRef(jobID), nil
	}
	for i, t := range sp.Slices {
		t.JobId, t.TaskId, t.Index, t.Count = jobID, taskID(jobID, i), uint32(i), uint32(len(sp.Slices))
		t.Source, t.SourceRef, t.Table, t.SchemaId, t.PlannedAt = inline, p.sourceRef, spec.Sink.Table, schemaID, timestamppb.New(now)
		p.tasks = append(p.tasks, t)
	}
	return p
}
