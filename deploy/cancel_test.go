package deploy

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestPipelineCancel cancels a job while its tasks are being extracted: the job ends cancelled, the
// extractors skip its remaining tasks and commit them (the group's lag drains long before the job
// would have ended), what was extracted before is loaded, and a second cancel changes nothing.
func TestPipelineCancel(t *testing.T) {
	stacktest.Require(t)
	const n, tasks = 40_000, 40
	src := demosource.DefaultConfig()
	src.Records = n
	src.PageLatency = 100 * time.Millisecond
	p := newPipeline(t, src)
	env := p.with(map[string]string{"SLUICE_EXTRACTOR_CONCURRENCY": "2", "SLUICE_PLANNER_LAG_INTERVAL": "1s"})
	planner := start(t, "planner", env).ready(t)
	x := start(t, "extractor", env)
	x.ready(t)
	start(t, "loader", env).ready(t)

	// 40 tasks of 10 pages of 100 records, 2 at a time: some 20 s of extraction.
	j := submit(t, planner, jobSpec("cancel", p.srcURL, "cancelled", tasks, 100, 3))
	p.waitRows(t, "cancelled", 500, time.Minute)
	code, out := p.sluicectl(t, planner, "jobs", "cancel", j.ID, "-o", "json")
	if err := json.Unmarshal([]byte(out), &j); err != nil || code != 0 {
		t.Fatalf("sluicectl jobs cancel exited %d: %s (%v)", code, out, err)
	}
	// The cancel came while tasks were still to do.
	if j.State != "cancelled" || !strings.Contains(j.Reason, "cancelled by tests") || j.FinishedAt == nil ||
		j.Tasks.Extracted+j.Tasks.DeadLettered >= tasks {
		t.Fatalf("cancelled job %+v, want cancelled by tests with tasks left", j)
	}
	cancelledAt := time.Now()

	// The extractors skip the rest: the tasks topic and the raw topic drain.
	waitDrained(t, planner, env, cancelledAt)
	skipped := metric(t, x.addr(t), "extractor_tasks_total", `outcome="cancelled"`)
	extracted := metric(t, x.addr(t), "extractor_tasks_total", `outcome="extracted"`)
	if skipped == 0 || skipped+extracted < tasks {
		t.Fatalf("extractor skipped %v tasks and extracted %v, want every one of the %d tasks accounted and some skipped", skipped, extracted, tasks)
	}
	rows, keys := p.count(t, "cancelled")
	if keys == 0 || keys >= n || rows < keys {
		t.Fatalf("%d rows, %d keys after the cancel: want some records and not all %d", rows, keys, n)
	}
	if again := poll(t, planner, j.ID); again.State != "cancelled" || again.Records.Loaded > keys {
		t.Fatalf("after the cancel the job is %+v; %d keys in clickhouse", again, keys)
	}
	// Cancelling again is no error and changes nothing.
	if code, out := p.sluicectl(t, planner, "jobs", "cancel", j.ID, "-o", "json"); code != 0 || !strings.Contains(out, `"state": "cancelled"`) {
		t.Fatalf("a second cancel exited %d: %s", code, out)
	}
	if code, _ := p.sluicectl(t, planner, "jobs", "cancel", "no-such-job"); code != 1 {
		t.Fatalf("cancelling no job exited %d, want 1", code)
	}
}
