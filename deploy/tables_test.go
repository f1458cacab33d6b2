package deploy

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestPipelineTablesOwned runs jobs of several names into raw landing tables through the real
// services on ClickHouse 18.16:
//   - a second job name is refused at submit (400 on sink.table, naming the owner) until both jobs
//     say shared: true, and then both jobs' rows, with the same keys, are kept;
//   - a Buffer table is refused at submit, and a table that became a Buffer after the submit is
//     refused by the loader: the job is held, then its records dead-lettered with class schema;
//   - a raw table as sluice created it before it kept job names (ORDER BY key) takes its one job's
//     rows as before, and cannot be shared.
func TestPipelineTablesOwned(t *testing.T) {
	stacktest.Require(t)
	const n = 2000
	src := demosource.DefaultConfig()
	src.Records = n
	p := newPipeline(t, src)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := p.ch.Database
	for _, sql := range []string{
		chsink.Raw.CreateSQL(db, "dest"),
		"CREATE TABLE buffered AS dest ENGINE = Buffer(" + db + ", dest, 1, 1, 10, 1, 1000000, 1, 100000000)",
		// The raw landing table as sluice created it before.
		"CREATE TABLE before (key String, payload String, job_id String, task_id String, kafka_partition Int32, kafka_offset Int64, " +
			"extracted_at DateTime, loaded_at DateTime, version UInt64) ENGINE = ReplacingMergeTree(version) ORDER BY key",
	} {
		if err := p.conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	env := p.with(map[string]string{"SLUICE_LOADER_SCHEMA_GRACE": "3s"})
	planner := start(t, "planner", env).ready(t)
	start(t, "extractor", env).ready(t)

	spec := func(name, table string, shared bool) string {
		s := jobSpec(name, p.srcURL, table, 2, 500, 3)
		if shared {
			s += "  shared: true\n"
		}
		return s
	}
	refused := func(spec string, want ...string) {
		t.Helper()
		status, body := post(t, planner, spec, "")
		if status != http.StatusBadRequest || !strings.Contains(body, "sink.table") {
			t.Fatalf("submit: %d %s, want a 400 on sink.table", status, body)
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Fatalf("submit: %s, want it to say %q", body, w)
			}
		}
	}

	// A table that became a Buffer after its job was accepted: the loader refuses it.
	late := submit(t, planner, spec("late", "later", false))
	if err := p.conn.Exec(ctx, "CREATE TABLE later AS dest ENGINE = Buffer("+db+", dest, 1, 1, 10, 1, 1000000, 1, 100000000)"); err != nil {
		t.Fatal(err)
	}
	refused(spec("buffered", "buffered", false), "Buffer")

	crm := submit(t, planner, spec("crm", "people", false))
	refused(spec("billing", "people", false), "written by job crm, which does not share it")
	refused(spec("billing", "people", true), "written by job crm, which does not share it")
	old := submit(t, planner, spec("old", "before", false))
	refused(spec("old", "before", true), "no column job_name")
	refused(spec("other", "before", false), "written by job old")
	loader := start(t, "loader", env)
	loader.ready(t)
	for _, j := range []job{crm, old} {
		if got := await(t, planner, j.ID, 2*time.Minute); got.State != "succeeded" || got.Records.Loaded != n {
			t.Fatalf("job %s ended %+v", j.ID, got)
		}
	}
	// Once the first job shares the table, the second may write it too.
	crmShared := submit(t, planner, spec("crm", "people", true))
	billing := submit(t, planner, spec("billing", "people", true))
	refused(spec("crm", "people", false), "shared with job billing: job crm must keep shared: true")
	for _, j := range []job{crmShared, billing} {
		if got := await(t, planner, j.ID, 2*time.Minute); got.State != "succeeded" || got.Records.Loaded != n {
			t.Fatalf("job %s ended %+v", j.ID, got)
		}
	}
	got := query(t, p, "SELECT concat(job_name, ' ', toString(count()), ' ', toString(uniqExact(key))) FROM people FINAL GROUP BY job_name ORDER BY job_name")
	if want := []string{fmt.Sprintf("billing %d %d", n, n), fmt.Sprintf("crm %d %d", n, n)}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("people holds %q, want %q: each job's rows, with the same keys", got, want)
	}
	if got := query(t, p, "SELECT toString(count()) FROM before FINAL"); got[0] != fmt.Sprint(n) {
		t.Fatalf("the table of before holds %s rows, want %d", got[0], n)
	}
	if got := query(t, p, "SELECT concat(sink_table, ' ', job, ' ', toString(argMax(shared, claimed_ns))) FROM "+chsink.OwnersTable+
		" GROUP BY sink_table, job ORDER BY sink_table, job"); strings.Join(got, "|") != "before old 0|later late 0|people billing 1|people crm 1" {
		t.Fatalf("owners %q", got)
	}

	// The job of the table that became a Buffer: held, then its records dead-lettered; nothing
	// reached the Buffer.
	j := await(t, planner, late.ID, 2*time.Minute)
	if j.State != "failed" || j.Records.DeadLettered != n || j.Records.Loaded != 0 || !strings.Contains(j.Reason, "schema") {
		t.Fatalf("the job of the Buffer table ended %+v", j)
	}
	letters := 0
	for _, dl := range p.deadLetters(t) {
		if strings.HasPrefix(dl.JobId, "late-") {
			letters++
			if dl.ErrorClass != "schema" || !strings.Contains(dl.ErrorMessage, "Buffer") {
				t.Fatalf("letter %s: %s", dl.ErrorClass, dl.ErrorMessage)
			}
		}
	}
	if letters != n {
		t.Fatalf("%d letters of the Buffer table's job, want %d", letters, n)
	}
	if got := query(t, p, "SELECT toString(count()) FROM dest"); got[0] != "0" {
		t.Fatalf("%s rows reached the Buffer's destination", got[0])
	}
}
