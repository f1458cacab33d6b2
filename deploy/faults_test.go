package deploy

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

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

	// A spec whose existing table cannot take the landing rows is refused at submit, with why.
	status, body := post(t, planner, jobSpec("refused", p.srcURL, "narrow", 2, 500, 3), "")
	if status != http.StatusBadRequest || !strings.Contains(body, "sink.table") || !strings.Contains(body, "no column key") {
		t.Fatalf("submit into the incompatible table: %d %s", status, body)
	}
	// The same table made incompatible after the submit: the loaders find it.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.conn.Exec(ctx, "RENAME TABLE narrow TO narrow_later"); err != nil {
		t.Fatal(err)
	}
	held := submit(t, planner, strings.Replace(jobSpec("held", p.srcURL, "narrow", 2, 500, 3), "  max_retries: 3", fmt.Sprintf("  max_retries: 3\n  max_records: %d", bad), 1))
	submitted := time.Now()
	if err := p.conn.Exec(ctx, "RENAME TABLE narrow_later TO narrow"); err != nil {
		t.Fatal(err)
	}
	other := submit(t, planner, jobSpec("other", p.srcURL, "wide", 8, 500, 3))
	start(t, "loader", env).ready(t)

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
