package main

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/jobspec"
	"github.com/sluicedata/sluice/pkg/source"
)

func spec(t *testing.T, pagination string, pageSize, tasks int, maxRecords uint64) *jobspec.Spec {
	t.Helper()
	doc := fmt.Sprintf(`name: users
source:
  url: http://127.0.0.1:8081/api/users
  records_path: data
  key: id
  pagination: {type: %s, page_size: %d, total_path: total}
  max_records: %d
tasks: %d
sink: {table: users}
`, pagination, pageSize, maxRecords, tasks)
	s, err := jobspec.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPlanOffsets checks that offset tasks cover [0, n) exactly once, in page-aligned ranges.
func TestPlanOffsets(t *testing.T) {
	tests := []struct {
		name                string
		total               int64
		pageSize, tasks     int
		maxRecords          uint64
		wantTasks, wantRecs int64
	}{
		{"even split", 100_000, 1000, 16, 0, 16, 100_000},
		{"last page short", 10_050, 500, 16, 0, 16, 10_050},
		{"more tasks than pages", 2_500, 1000, 16, 0, 3, 2_500},
		{"max_records caps the total", 100_000, 1000, 4, 4_321, 4, 4_321},
		{"nothing to extract", 0, 100, 4, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := planJob(spec(t, "offset", tt.pageSize, tt.tasks, tt.maxRecords), "job-1", tt.total, time.Now())
			if int64(len(p.tasks)) != tt.wantTasks || p.expected != tt.wantRecs {
				t.Fatalf("%d tasks for %d records, want %d for %d", len(p.tasks), p.expected, tt.wantTasks, tt.wantRecs)
			}
			next := uint64(0)
			for i, task := range p.tasks {
				r := task.GetOffsets()
				if task.TaskId != fmt.Sprintf("job-1-t%04d", i) || r.Start != next || r.End <= r.Start || r.Start%uint64(tt.pageSize) != 0 {
					t.Fatalf("task %d = %s %+v after offset %d", i, task.TaskId, r, next)
				}
				next = r.End
			}
			if next != uint64(tt.wantRecs) {
				t.Fatalf("tasks end at %d, want %d", next, tt.wantRecs)
			}
		})
	}
}

func TestPlanPages(t *testing.T) {
	p := planJob(spec(t, "page", 100, 3, 0), "job-2", 1_000, time.Now())
	next := uint64(1)
	if p.tasks[0].GetPages().Unbounded {
		t.Fatal("a bounded job planned an unbounded page range")
	}
	for _, task := range p.tasks {
		r := task.GetPages()
		if r.First != next || r.Last < r.First {
			t.Fatalf("page range %+v after page %d", r, next)
		}
		next = r.Last + 1
	}
	if len(p.tasks) != 3 || next != 11 {
		t.Fatalf("%d tasks ending before page %d, want 3 covering pages 1..10", len(p.tasks), next)
	}
}

func TestPlanUnknownExtent(t *testing.T) {
	p := planJob(spec(t, "offset", 100, 8, 0), "job-3", -1, time.Now())
	if len(p.tasks) != 1 || p.expected != -1 || !p.tasks[0].GetOffsets().Unbounded {
		t.Fatalf("plan %+v, want one open-ended task", p)
	}
}

// planJob plans a job whose source reported total records (-1: none), through the source's Replan.
func planJob(s *jobspec.Spec, jobID string, total int64, now time.Time) plan {
	src, err := source.New(s.SourceProto(), source.Env{})
	if err != nil {
		panic(err)
	}
	sp, err := src.Replan([]byte(strconv.FormatInt(total, 10)), s.Tasks)
	if err != nil {
		panic(err)
	}
	return planTasks(s, s.SourceProto(), "", jobID, sp, now)
}
