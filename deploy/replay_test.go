package deploy

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestDeadLetterReplay fails a task (its source answers 500) and a job's records (their table
// cannot take them), fixes both, and replays the letters: a dry run changes nothing, --execute runs
// the task again and puts the records back onto the raw topic, both tables end exact, and replaying
// the same letters again adds nothing.
func TestDeadLetterReplay(t *testing.T) {
	stacktest.Require(t)
	const n, held = 20_000, 2_000
	src := demosource.DefaultConfig()
	src.Records = n
	p := newPipeline(t, src)
	failing := func(r *http.Request) bool {
		off, _ := strconv.Atoi(r.URL.Query().Get("offset"))
		return off >= 10_000 && off < 10_500
	}
	p.failing.Store(&failing)
	env := p.with(map[string]string{"SLUICE_EXTRACTOR_RETRY_BASE": "10ms", "SLUICE_EXTRACTOR_RETRY_MAX": "50ms",
		"SLUICE_LOADER_SCHEMA_GRACE": "3s", "SLUICE_PLANNER_LAG_INTERVAL": "1s"})
	planner := start(t, "planner", env).ready(t)
	x := start(t, "extractor", env)
	x.ready(t)

	flaky := submit(t, planner, jobSpec("flaky", p.srcURL, "flaky", 8, 500, 1))
	// The held job's table exists before the loaders start, and cannot take the landing rows.
	narrow := submit(t, planner, strings.Replace(jobSpec("held", p.srcURL, "narrow", 2, 500, 3), "  max_retries: 3", "  max_retries: 3\n  max_records: 2000", 1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.conn.Exec(ctx, "CREATE TABLE narrow (id UInt64) ENGINE = MergeTree ORDER BY id"); err != nil {
		t.Fatal(err)
	}
	l := start(t, "loader", env)
	l.ready(t)
	if j := await(t, planner, flaky.ID, 3*time.Minute); j.State != "failed" || j.Tasks.DeadLettered != 1 {
		t.Fatalf("flaky job ended %+v, want failed with one task dead-lettered", j)
	}
	if j := await(t, planner, narrow.ID, 3*time.Minute); j.State != "failed" || j.Records.DeadLettered != held {
		t.Fatalf("held job ended %+v, want failed with its %d records dead-lettered", j, held)
	}

	if _, keys := p.count(t, "flaky"); keys >= n {
		t.Fatalf("%d keys of the flaky job before the replay, want fewer than %d", keys, n)
	}

	type plan struct {
		Executed bool `json:"executed"`
		Tasks    int  `json:"tasks"`
		Records  int  `json:"records"`
		Skipped  int  `json:"skipped"`
	}
	replay := func(args ...string) plan {
		t.Helper()
		code, out := p.sluicectl(t, planner, append([]string{"dlq", "replay", "-o", "json"}, args...)...)
		var got plan
		if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 {
			t.Fatalf("sluicectl dlq replay %v exited %d: %s (%v)", args, code, out, err)
		}
		return got
	}
	if code, _ := p.sluicectl(t, planner, "dlq", "replay"); code != 2 {
		t.Fatalf("a replay without a filter exited %d, want 2 (usage)", code)
	}

	// A dry run says what it would do and does nothing: the topics it would write keep their ends.
	cl, err := kafka.NewClient(p.kafka, "replay-test", stacktest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends := func() (total int64) {
		for _, topic := range []string{p.kafka.TasksTopic, p.kafka.RawTopic} {
			_, e, err := kafka.Offsets(ctx, cl, topic)
			if err != nil {
				t.Fatal(err)
			}
			e.Each(func(o kadm.ListedOffset) { total += o.Offset })
		}
		return total
	}
	before := ends()
	if got := replay("--job", flaky.ID); got.Executed || got.Tasks != 1 || got.Records != 0 || got.Skipped != 0 {
		t.Fatalf("dry run of the flaky job: %+v, want its one task", got)
	}
	if got := replay("--stage", "load", "--class", "schema"); got.Executed || got.Tasks != 0 || got.Records != held {
		t.Fatalf("dry run of the schema letters: %+v, want %d records", got, held)
	}
	if after := ends(); after != before {
		t.Fatalf("a dry run wrote %d messages", after-before)
	}

	// Fixed: the source answers, the table goes (the loaders create the landing table).
	p.failing.Store(nil)
	if err := p.conn.Exec(ctx, "DROP TABLE narrow"); err != nil {
		t.Fatal(err)
	}
	replayBoth := func() {
		t.Helper()
		if got := replay("--job", flaky.ID, "--execute"); !got.Executed || got.Tasks != 1 {
			t.Fatalf("replay of the flaky job: %+v", got)
		}
		if got := replay("--job", narrow.ID, "--stage", "load", "--execute"); !got.Executed || got.Records != held {
			t.Fatalf("replay of the held job's records: %+v", got)
		}
	}
	replayBoth()
	p.waitRows(t, "flaky", n, time.Minute)
	p.waitRows(t, "narrow", held, time.Minute)
	checkExact(t, p, "flaky", n, src.RecordSize)
	checkExact(t, p, "narrow", held, src.RecordSize)

	// Again: the task runs (or is known done) once more and the records load once more, and
	// nothing is added after FINAL.
	tasksSeen := func() float64 {
		return metric(t, x.addr(t), "extractor_tasks_total", `outcome="extracted"`) + metric(t, x.addr(t), "extractor_task_copies_skipped_total")
	}
	loaded := func() float64 { return metric(t, l.addr(t), "pipeline_records_processed_total", `status="loaded"`) }
	seen, inserted := tasksSeen(), loaded()
	replayBoth()
	deadline := time.Now().Add(time.Minute)
	for tasksSeen() < seen+1 || loaded() < inserted+held {
		if time.Now().After(deadline) {
			t.Fatalf("the second replay was not taken in a minute: tasks %v → %v, loaded %v → %v", seen, tasksSeen(), inserted, loaded())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The replayed task's records are on the raw topic once its task is seen; wait for the loaders
	// to commit them before counting.
	waitDrained(t, planner, env, time.Now())
	checkExact(t, p, "flaky", n, src.RecordSize)
	checkExact(t, p, "narrow", held, src.RecordSize)
}
