package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/events"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// TestFinishedJobsForgotten: five jobs finished a minute apart (users-1 the oldest) and one runs
// since before them all. Past SLUICE_PLANNER_KEEP_FINISHED_MAX, or SLUICE_PLANNER_KEEP_FINISHED
// after they finished by the planner's clock, the oldest finished jobs are forgotten: GET answers
// 404, their states on the jobs topic get a tombstone, and a planner started anew on the same
// events does not know them either. The running job stays.
func TestFinishedJobsForgotten(t *testing.T) {
	base := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name         string
		env          map[string]string
		start, later time.Duration // the clock after base, at start and once the states are stored
		gone, kept   []string
	}{
		{"by count", map[string]string{"SLUICE_PLANNER_KEEP_FINISHED_MAX": "3"}, 10 * time.Minute, 10 * time.Minute,
			[]string{"users-1", "users-2"}, []string{"users-3", "users-4", "users-5"}},
		{"by age", map[string]string{"SLUICE_PLANNER_KEEP_FINISHED": "1h"}, 10 * time.Minute, time.Hour + 150*time.Second,
			[]string{"users-1", "users-2"}, []string{"users-3", "users-4", "users-5"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newPlannerRig(t)
			var cfg Config
			c.env["SLUICE_PLANNER_JOB_STALL_TIMEOUT"] = "1000h"
			if err := config.Load(context.Background(), envconfig.MapLookuper(c.env), &cfg); err != nil {
				t.Fatal(err)
			}
			r.cfg = cfg.Planner
			r.cfg.RepublishAfter = 200 * time.Millisecond // the upkeep every 100 ms
			var clock atomic.Int64
			clock.Store(base.Add(c.start).UnixNano())
			r.now = func() time.Time { return time.Unix(0, clock.Load()).UTC() }
			publishFinishedJobs(t, r, base)

			p := r.start(t)
			waitUntil(t, "the kept jobs' states on the jobs topic", func() bool {
				states := lastStates(t, r)
				for _, id := range c.kept {
					if len(states[id]) == 0 {
						return false
					}
				}
				return true
			})
			clock.Store(base.Add(c.later).UnixNano())
			waitUntil(t, "the oldest jobs forgotten", func() bool {
				for _, id := range c.gone {
					if _, ok := p.jobs.Get(id, r.now()); ok {
						return false
					}
				}
				return true
			})
			ts := apiRig(t, p)
			for _, id := range c.gone {
				if resp, body := get(t, ts.URL+"/v1/jobs/"+id, ""); resp.StatusCode != http.StatusNotFound {
					t.Errorf("GET /v1/jobs/%s of a forgotten job: %s %s, want 404", id, resp.Status, body)
				}
			}
			waitUntil(t, "the tombstones of the forgotten jobs", func() bool {
				states := lastStates(t, r)
				for _, id := range c.gone {
					if v, ok := states[id]; ok && len(v) != 0 {
						return false
					}
				}
				return true
			})
			// The events of the forgotten jobs are still on the events topic: a planner started anew
			// passes them over, and one that finds no tombstones (compaction dropped them) forgets
			// the jobs again before it is ready.
			again := r.start(t)
			r.jobs = "jobs-compacted"
			afresh := r.start(t)
			for _, p := range []*Planner{p, again, afresh} {
				for _, id := range append([]string{"users-running"}, c.kept...) {
					if _, ok := p.jobs.Get(id, r.now()); !ok {
						t.Errorf("job %s was forgotten, want it kept", id)
					}
				}
				for _, id := range c.gone {
					if _, ok := p.jobs.Get(id, r.now()); ok {
						t.Errorf("job %s is known, want it forgotten", id)
					}
				}
			}
		})
	}
}

// publishFinishedJobs puts on the events topic users-1 … users-5, without tasks, planned and so
// finished at base plus their number of minutes, and users-running, planned at base with a task
// that was published and never reports.
func publishFinishedJobs(t *testing.T, r *plannerRig, base time.Time) {
	t.Helper()
	evs := []*sluicev1.JobEvent{planned("users-running", 1, 10), {JobId: "users-running", At: timestamppb.New(base),
		Event: &sluicev1.JobEvent_TasksPublished{TasksPublished: &sluicev1.TasksPublished{Tasks: 1}}}}
	evs[0].At = timestamppb.New(base)
	for i := 1; i <= 5; i++ {
		ev := planned(fmt.Sprintf("users-%d", i), 0, 0)
		ev.At = timestamppb.New(base.Add(time.Duration(i) * time.Minute))
		evs = append(evs, ev)
	}
	for _, ev := range evs {
		if err := events.Publish(context.Background(), r.client(t), r.events, ev); err != nil {
			t.Fatal(err)
		}
	}
}

// lastStates returns the last value of each key of the jobs topic; an empty one is a tombstone.
func lastStates(t *testing.T, r *plannerRig) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, rec := range r.count(t, "jobs") {
		out[string(rec.Key)] = rec.Value
	}
	return out
}

// TestForgetKeepsWhatIsStillNeeded: a finished job past the retention stays while a cancel is not
// on the jobs topic, while a run's cursor is not compared with its mark, while it is the newest
// run of a scheduled job, and for a minute after it ended.
func TestForgetKeepsWhatIsStillNeeded(t *testing.T) {
	base := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	now := base.Add(time.Hour)
	at := func(ev *sluicev1.JobEvent, when time.Time) *sluicev1.JobEvent {
		ev.At = timestamppb.New(when)
		return ev
	}
	for _, c := range []struct {
		name      string
		keep      retention
		scheduled map[string]bool
		fold      func(js *Jobs)
		kept      []string
	}{
		{"past the age", retention{age: 10 * time.Minute}, nil, func(js *Jobs) {
			js.Apply(at(planned("j1", 0, 0), base))
			js.Apply(at(planned("j2", 0, 0), now.Add(-5*time.Minute)))
		}, []string{"j2"}},
		{"past the count, the oldest", retention{most: 1}, nil, func(js *Jobs) {
			js.Apply(at(planned("j2", 0, 0), base.Add(time.Minute)))
			js.Apply(at(planned("j1", 0, 0), base))
		}, []string{"j2"}},
		{"past the count, within a minute of their end", retention{most: 1}, nil, func(js *Jobs) {
			js.Apply(at(planned("j1", 0, 0), now.Add(-30*time.Second)))
			js.Apply(at(planned("j2", 0, 0), now.Add(-20*time.Second)))
		}, []string{"j1", "j2"}},
		{"running", retention{most: 1, age: time.Minute}, nil, func(js *Jobs) {
			js.Apply(at(planned("j1", 1, 10), base))
			js.Apply(at(planned("j2", 1, 10), base))
		}, []string{"j1", "j2"}},
		{"cancelled, its state not stored", retention{age: 10 * time.Minute}, nil, func(js *Jobs) {
			js.Apply(at(planned("j1", 1, 10), base))
			_, _ = js.Cancel("j1", "ops", base)
		}, []string{"j1"}},
		{"cancelled, its state stored", retention{age: 10 * time.Minute}, nil, func(js *Jobs) {
			js.Apply(at(planned("j1", 1, 10), base))
			_, _ = js.Cancel("j1", "ops", base)
			js.Stored(js.Unstored())
		}, nil},
		{"succeeded, its cursor not compared with the mark", retention{age: 10 * time.Minute}, nil, func(js *Jobs) {
			js.Apply(at(planned("j1", 1, 10), base))
			ex := extracted("j1", taskID("j1", 0), "r1", 10)
			ex.GetTaskExtracted().MaxCursor = "42"
			js.Apply(at(ex, base))
			js.Apply(at(loaded("j1", taskID("j1", 0), "r1", 0, 0, 9), base))
		}, []string{"j1"}},
		{"succeeded, its cursor compared with the mark", retention{age: 10 * time.Minute}, nil, func(js *Jobs) {
			js.Apply(at(planned("j1", 1, 10), base))
			ex := extracted("j1", taskID("j1", 0), "r1", 10)
			ex.GetTaskExtracted().MaxCursor = "42"
			js.Apply(at(ex, base))
			js.Apply(at(loaded("j1", taskID("j1", 0), "r1", 0, 0, 9), base))
			js.MarksChecked([]string{"j1"})
		}, nil},
		{"the newest run of a scheduled job", retention{age: 10 * time.Minute}, map[string]bool{"users": true}, func(js *Jobs) {
			js.Apply(at(planned("j1", 0, 0), base))
			js.Apply(at(planned("j2", 0, 0), base.Add(time.Minute)))
		}, []string{"j2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			js := newJobs()
			c.fold(js)
			js.Forget(now, c.keep, c.scheduled)
			var kept []string
			for _, j := range js.jobs {
				kept = append(kept, j.ID)
			}
			slices.Sort(kept)
			if !slices.Equal(kept, c.kept) {
				t.Fatalf("kept %v, want %v", kept, c.kept)
			}
		})
	}
}

// TestForgetFreesOnlyItsKey: a key freed by a forgotten job and used again names the new job, which
// a planner that folds both finds (in either order) and keeps finding once the old one is forgotten:
// a retry with the key does not plan a second run beside the one running.
func TestForgetFreesOnlyItsKey(t *testing.T) {
	base := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	old := &sluicev1.JobState{JobId: "old", Name: "users", State: stateSucceeded, IdempotencyKey: "k",
		CreatedAt: timestamppb.New(base), FinishedAt: timestamppb.New(base)}
	running := planned("new", 1, 10)
	running.At = timestamppb.New(base.Add(time.Hour))
	running.GetPlanned().IdempotencyKey = "k"
	for _, c := range []struct {
		name string
		fold func(js *Jobs)
	}{
		{"the old state first", func(js *Jobs) { js.Restore(old); js.Apply(running) }},
		{"the new job first", func(js *Jobs) { js.Apply(running); js.Restore(old) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			js := newJobs()
			c.fold(js)
			if j, _, ok := js.ByKey("k", base); !ok || j.ID != "new" {
				t.Fatalf("the key names %q (%v), want the newer job", j.ID, ok)
			}
			if gone := js.Forget(base.Add(2*time.Hour), retention{age: time.Hour}, nil); len(gone) != 1 || gone[0].ID != "old" {
				t.Fatalf("forgot %v, want the old job", gone)
			}
			if j, _, ok := js.ByKey("k", base); !ok || j.ID != "new" {
				t.Fatalf("after the old job is forgotten the key names %q (%v), want the running job", j.ID, ok)
			}
		})
	}
}
