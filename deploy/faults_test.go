package deploy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// TestPipelineKafkaKilled kills the pipeline's only broker with SIGKILL in the middle of a job and
// starts it again 10 s later: no member is restarted, and the job succeeds with every record exactly
// once. Before the fix the loader rejoined its group and never inserted again.
func TestPipelineKafkaKilled(t *testing.T) {
	stacktest.Require(t)
	const n = 40_000
	src := demosource.DefaultConfig()
	src.Records = n
	src.PageLatency = 80 * time.Millisecond // about 15 s of extraction: the outage falls inside it
	broker := ownKafka(t)
	p := newPipelineOn(t, src, stacktest.KafkaAt(t, broker.addr))
	env := p.with(map[string]string{"SLUICE_LOADER_BATCH_ROWS": "2000"})
	planner := start(t, "planner", env).ready(t)
	extractor := start(t, "extractor", env)
	extractor.ready(t)
	loader := start(t, "loader", env)
	loader.ready(t)

	j := submit(t, planner, jobSpec("kafkakill", p.srcURL, "kafkakill", 6, 100, 3))
	p.waitRows(t, "kafkakill", 4000, time.Minute)
	before := poll(t, planner, j.ID)
	broker.kill(t)
	if before.State != "running" || before.Records.Loaded >= n {
		t.Fatalf("the broker was killed after the job had ended: %+v", before)
	}
	_, keysAtKill := p.count(t, "kafkakill")
	time.Sleep(10 * time.Second) // the outage itself
	broker.start(t)

	j = await(t, planner, j.ID, 4*time.Minute)
	if j.State != "succeeded" || j.Records.Loaded != n || j.Records.DeadLettered != 0 {
		t.Fatalf("job ended %+v", j)
	}
	checkExact(t, p, "kafkakill", n, src.RecordSize)
	if keysAtKill >= n {
		t.Fatalf("all %d keys were in ClickHouse when the broker died: the fault came too late", keysAtKill)
	}
	for _, s := range []*proc{extractor, loader} {
		if !s.running() {
			t.Fatalf("%s exited during the outage", s.name)
		}
	}
}

// TestPipelineIncompatibleTable runs two jobs at once, one into a table of its own and one into an
// existing table whose columns cannot take the landing rows: the first succeeds meanwhile, the
// second says why on its status within a minute, and after the loader's grace its records end in
// the dead-letter topic with class schema, every one of them, and the job fails with the reason.
func TestPipelineIncompatibleTable(t *testing.T) {
	stacktest.Require(t)
	const good, bad = 20_000, 5_000
	src := demosource.DefaultConfig()
	src.Records = good
	src.PageLatency = 20 * time.Millisecond
	p := newPipeline(t, src)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.conn.Exec(ctx, "CREATE TABLE narrow (id UInt64) ENGINE = MergeTree ORDER BY id"); err != nil {
		t.Fatal(err)
	}
	const grace = 40 * time.Second
	env := p.with(map[string]string{"SLUICE_LOADER_SCHEMA_GRACE": grace.String()})
	planner := start(t, "planner", env).ready(t)
	start(t, "extractor", env).ready(t)
	start(t, "loader", env).ready(t)

	held := submit(t, planner, strings.Replace(jobSpec("held", p.srcURL, "narrow", 2, 500, 3), "  max_retries: 3", fmt.Sprintf("  max_retries: 3\n  max_records: %d", bad), 1))
	submitted := time.Now()
	other := submit(t, planner, jobSpec("other", p.srcURL, "wide", 8, 500, 3))

	var j job
	for j = poll(t, planner, held.ID); j.Held == nil; j = poll(t, planner, held.ID) {
		if time.Since(submitted) > time.Minute {
			t.Fatalf("job %s not reported held a minute after submit: %+v", held.ID, j)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if j.Held.Table != "narrow" || !strings.Contains(j.Held.Reason, "narrow") || j.State != "running" {
		t.Fatalf("held job %+v, held %+v", j, j.Held)
	}

	o := await(t, planner, other.ID, 3*time.Minute)
	if o.State != "succeeded" || o.Records.Loaded != good {
		t.Fatalf("the other job ended %+v while the held one waited", o)
	}
	checkExact(t, p, "wide", good, src.RecordSize)
	if j = poll(t, planner, held.ID); j.State != "running" {
		t.Fatalf("the held job ended before the other succeeded: %+v", j)
	}

	j = await(t, planner, held.ID, grace+2*time.Minute)
	if j.State != "failed" || j.Records.DeadLettered != bad || j.Records.Loaded != 0 || !strings.Contains(j.Reason, "schema") {
		t.Fatalf("held job ended %+v", j)
	}
	keys := map[string]bool{}
	for _, dl := range p.deadLetters(t) {
		if dl.ErrorClass != "schema" || dl.JobId != held.ID || dl.Stage != sluicev1.DeadLetter_STAGE_LOAD || len(dl.Payload) == 0 {
			t.Fatalf("dead letter %+v", dl)
		}
		keys[string(dl.OriginalKey)] = true
	}
	if len(keys) != bad {
		t.Fatalf("%d distinct keys dead-lettered, want all %d of the held job", len(keys), bad)
	}
}
