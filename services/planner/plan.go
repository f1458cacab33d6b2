package main

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

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
}

// taskID is the deterministic id of a job's task.
func taskID(jobID string, index int) string { return fmt.Sprintf("%s-t%04d", jobID, index) }

// planTasks makes the tasks of a job from its source's plan: one per slice, with ids that derive
// from the job's, each carrying src.
func planTasks(spec *jobspec.Spec, src *sluicev1.Source, schemaID, jobID string, sp source.Plan, now time.Time) plan {
	p := plan{jobID: jobID, expected: sp.Expected, extent: sp.Extent, tasks: make([]*sluicev1.Task, 0, len(sp.Slices))}
	for i, t := range sp.Slices {
		t.JobId, t.TaskId, t.Index, t.Count = jobID, taskID(jobID, i), uint32(i), uint32(len(sp.Slices))
		t.Source, t.Table, t.SchemaId, t.PlannedAt = src, spec.Sink.Table, schemaID, timestamppb.New(now)
		p.tasks = append(p.tasks, t)
	}
	return p
}
