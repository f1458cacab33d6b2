package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// pgTable is a PostgreSQL database of the test's own made by sql, with its connection string
// and a function that runs more statements in it.
func pgTable(t testing.TB, sql ...string) (string, func(string, ...any)) {
	t.Helper()
	dsn := stacktest.Postgres(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for _, q := range sql {
		exec(q)
	}
	return dsn, exec
}

const incrementalSpec = `name: items
source:
  type: postgres
  dsn: "${SOURCE_PG_DSN}"
  table: items_v
  key: id
  batch_size: 100
incremental: {cursor_field: updated_at, initial_value: "2020-01-01T00:00:00Z"}
tasks: 3
sink:
  table: items
`

// TestPipelineIncremental runs one incremental job four times. The first run reads every row from
// the initial value on; the second, after 500 rows were added and 10 changed, reads only those
// (and the row at the mark again); a third run that fails (a view that repeats a key) leaves the
// mark where it was, which a planner started anew reads back from the jobs topic; the fourth reads
// from the mark of the second.
func TestPipelineIncremental(t *testing.T) {
	stacktest.Require(t)
	dsn, exec := pgTable(t,
		`CREATE TABLE items (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, v text)`,
		`INSERT INTO items SELECT i, timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second', 'a' FROM generate_series(1, 1000) i`,
		`INSERT INTO items VALUES (0, '2019-06-01 00:00:00+00', 'before the initial value')`,
		`CREATE VIEW items_v AS SELECT * FROM items`)
	p := newPipeline(t, demosource.DefaultConfig())
	env := p.with(map[string]string{"SOURCE_PG_DSN": dsn})
	planner := start(t, "planner-1", env)
	base := planner.ready(t)
	start(t, "extractor", env).ready(t)
	start(t, "loader", env).ready(t)

	run := func(base string, want string) job {
		t.Helper()
		j := await(t, base, submit(t, base, incrementalSpec).ID, 2*time.Minute)
		if j.State != want {
			t.Fatalf("run %s ended %s (%s), want %s", j.ID, j.State, j.Reason, want)
		}
		return j
	}
	first := run(base, "succeeded")
	if first.Since != "2020-01-01T00:00:00Z" || first.Records.Extracted != 1000 || first.MaxCursor != "2024-01-01T00:16:40+00:00" {
		t.Fatalf("first run: since %q, %d records, max cursor %q; want the initial value, 1000, 2024-01-01T00:16:40+00:00",
			first.Since, first.Records.Extracted, first.MaxCursor)
	}
	exec(`INSERT INTO items SELECT i, timestamptz '2024-02-01 00:00:00+00' + i * interval '1 second', 'b' FROM generate_series(1001, 1500) i`)
	exec(`UPDATE items SET updated_at = '2024-03-01 00:00:00+00', v = 'changed' WHERE id BETWEEN 1 AND 10`)
	second := run(base, "succeeded")
	// The row at the mark (id 1000) is read again: since is inclusive, for rows that share it.
	if second.Since != first.MaxCursor || second.Records.Extracted != 511 || second.MaxCursor != "2024-03-01T00:00:00+00:00" {
		t.Fatalf("second run: since %q, %d records, max cursor %q; want %s, 511, 2024-03-01T00:00:00+00:00",
			second.Since, second.Records.Extracted, second.MaxCursor, first.MaxCursor)
	}
	// Overlap is refused while a run runs: the view now repeats a key, so the third run fails.
	exec(`INSERT INTO items SELECT i, timestamptz '2024-04-01 00:00:00+00' + i * interval '1 second', 'c' FROM generate_series(1501, 1600) i`)
	exec(`CREATE OR REPLACE VIEW items_v AS SELECT * FROM items UNION ALL SELECT * FROM items WHERE id = 1550`)
	third := run(base, "failed")
	// Its other ranges read rows past the mark: had the failed run counted, the mark would move.
	if third.Since != second.MaxCursor || third.Tasks.DeadLettered == 0 || third.MaxCursor <= second.MaxCursor {
		t.Fatalf("third run: since %q, %d tasks dead-lettered, max cursor %q; want %s, a dead-lettered task, a cursor past the mark",
			third.Since, third.Tasks.DeadLettered, third.MaxCursor, second.MaxCursor)
	}

	// A planner started anew reads the mark back from the jobs topic.
	planner.stop(t, syscall.SIGTERM)
	base = start(t, "planner-2", env).ready(t)
	exec(`CREATE OR REPLACE VIEW items_v AS SELECT * FROM items`)
	fourth := run(base, "succeeded")
	if fourth.Since != second.MaxCursor || fourth.Records.Extracted != 110 {
		t.Fatalf("fourth run: since %q, %d records; want the second run's mark %s and the 100 new rows with the 10 at the mark",
			fourth.Since, fourth.Records.Extracted, second.MaxCursor)
	}
	got := p.rows(t, "items")
	if len(got) != 1600 {
		t.Fatalf("%d rows in ClickHouse, want 1600 (row 0 is before the initial value)", len(got))
	}
	if !strings.Contains(got["5"], `"v":"changed"`) {
		t.Fatalf("row 5 is %s, want its changed version", got["5"])
	}
}

// TestPipelineSchedule runs a job every 2 s: runs follow one another without overlapping, each
// from the mark of the last, a submission while one runs is refused, and a deleted schedule starts
// no more runs.
func TestPipelineSchedule(t *testing.T) {
	stacktest.Require(t)
	dsn, _ := pgTable(t,
		`CREATE TABLE ticks (id bigint PRIMARY KEY, at timestamptz NOT NULL)`,
		`INSERT INTO ticks SELECT i, timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute' FROM generate_series(1, 20000) i`)
	p := newPipeline(t, demosource.DefaultConfig())
	env := p.with(map[string]string{"SOURCE_PG_DSN": dsn})
	planner := start(t, "planner", env).ready(t)
	start(t, "extractor", env).ready(t)
	start(t, "loader", env).ready(t)
	spec := `name: ticks
source: {type: postgres, dsn: "${SOURCE_PG_DSN}", table: ticks, key: id, batch_size: 50}
incremental: {cursor_field: at}
schedule: {every: 2s}
sink: {table: ticks}
`
	first := submit(t, planner, spec)
	// While the first run runs, another submission of the job is refused.
	resp, err := apiDo(http.MethodPost, planner+"/v1/jobs", strings.NewReader(spec))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if j := poll(t, planner, first.ID); j.State == "running" && resp.StatusCode != http.StatusConflict {
		t.Fatalf("a second submission while a run runs: %s, want 409", resp.Status)
	}
	// Three runs, one after another.
	var runs []job
	deadline := time.Now().Add(3 * time.Minute)
	for len(runs) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("after 3 minutes, %d finished runs: %+v", len(runs), runs)
		}
		runs = runs[:0]
		for _, j := range list(t, planner) {
			if j.Name == "ticks" && j.State != "running" {
				runs = append([]job{j}, runs...) // the list is newest first
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i, r := range runs {
		if r.State != "succeeded" {
			t.Fatalf("run %d: %s (%s)", i, r.State, r.Reason)
		}
		if i > 0 && (r.CreatedAt.Before(*runs[i-1].FinishedAt) || r.Since != runs[i-1].MaxCursor) {
			t.Fatalf("run %d started %s from %q; the run before ended %s at mark %q", i, r.CreatedAt, r.Since, runs[i-1].FinishedAt, runs[i-1].MaxCursor)
		}
	}
	if runs[0].Records.Extracted != 20000 || runs[1].Records.Extracted != 1 {
		t.Fatalf("runs extracted %d then %d records; want all 20000, then only the row at the mark", runs[0].Records.Extracted, runs[1].Records.Extracted)
	}
	resp, err = apiDo(http.MethodDelete, planner+"/v1/schedules/ticks", nil)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete the schedule: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	// A run may have started just before the delete: wait for it, then see that none follows.
	for _, j := range list(t, planner) {
		if j.Name == "ticks" && j.State == "running" {
			await(t, planner, j.ID, time.Minute)
		}
	}
	before := len(list(t, planner))
	resp, err = apiDo(http.MethodGet, planner+"/v1/schedules", nil)
	if err != nil {
		t.Fatal(err)
	}
	var scheds struct{ Schedules []struct{ Name string } }
	_ = json.NewDecoder(resp.Body).Decode(&scheds)
	resp.Body.Close()
	if len(scheds.Schedules) != 0 {
		t.Fatalf("schedules after the delete: %+v", scheds.Schedules)
	}
	// The last run ended more than its interval ago by the second check after this point: each of
	// those checks would have started a run, had the schedule been there.
	checks := metric(t, planner, "planner_schedule_checks_total", "")
	deadline = time.Now().Add(time.Minute)
	for metric(t, planner, "planner_schedule_checks_total", "") < checks+2 {
		if time.Now().After(deadline) {
			t.Fatal("the planner did not check its schedules twice in a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if after := len(list(t, planner)); after != before {
		t.Fatalf("%d runs after the schedule was deleted, %d before", after, before)
	}
	if started := metric(t, planner, "planner_scheduled_runs_total", `outcome="started"`); started < 2 {
		t.Fatalf("planner_scheduled_runs_total{outcome=started} = %v, want the runs after the first", started)
	}
}

// list returns the planner's jobs, newest first.
func list(t *testing.T, planner string) []job {
	t.Helper()
	resp, err := apiDo(http.MethodGet, planner+"/v1/jobs", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Jobs []job }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(fmt.Errorf("list jobs: %w", err))
	}
	return out.Jobs
}

// TestPipelineMarks: a row stamped decades ahead does not become the mark. The run's largest cursor
// is the largest of the other rows, and the run counts the one it left out; sluicectl shows the
// mark, moves it back (the next run reads from there) and resets it (the next run reads from the
// initial value), and refuses a mark past the planner's skew.
func TestPipelineMarks(t *testing.T) {
	stacktest.Require(t)
	dsn, _ := pgTable(t,
		`CREATE TABLE items (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, v text)`,
		`INSERT INTO items SELECT i, timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second', 'a' FROM generate_series(1, 100) i`,
		`INSERT INTO items VALUES (101, '2099-01-01 00:00:00+00', 'stamped ahead')`)
	p := newPipeline(t, demosource.DefaultConfig())
	env := p.with(map[string]string{"SOURCE_PG_DSN": dsn})
	planner := start(t, "planner", env).ready(t)
	start(t, "extractor", env).ready(t)
	start(t, "loader", env).ready(t)
	spec := strings.ReplaceAll(incrementalSpec, "items_v", "items")
	run := func(since string, records uint64) job {
		t.Helper()
		j := await(t, planner, submit(t, planner, spec).ID, 2*time.Minute)
		if j.State != "succeeded" || j.Since != since || j.Records.Extracted != records ||
			j.MaxCursor != "2024-01-01T00:01:40+00:00" || j.CursorRejected.Future != 1 || j.CursorRejected.Unparseable != 0 {
			t.Fatalf("run %s: %s (%s) from %q, %d records, max cursor %q, rejected %+v; want succeeded from %q, %d records, "+
				"max cursor 2024-01-01T00:01:40+00:00, the row of 2099 rejected as future",
				j.ID, j.State, j.Reason, j.Since, j.Records.Extracted, j.MaxCursor, j.CursorRejected, since, records)
		}
		return j
	}
	markOf := func() map[string]any {
		t.Helper()
		code, out := p.sluicectl(t, planner, "marks", "items", "-o", "json")
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); code != 0 || err != nil {
			t.Fatalf("sluicectl marks items: exit %d, %q", code, out)
		}
		return m
	}

	first := run("2020-01-01T00:00:00Z", 101)
	if m := markOf(); m["value"] != first.MaxCursor || m["kind"] != "time" || m["job_id"] != first.ID {
		t.Fatalf("after the first run the mark is %v, want %s set by %s", m, first.MaxCursor, first.ID)
	}
	if code, _ := p.sluicectl(t, planner, "marks", "set", "items", "2099-01-01T00:00:00Z"); code != 1 {
		t.Fatalf("sluicectl marks set past the skew: exit %d, want 1", code)
	}
	if code, _ := p.sluicectl(t, planner, "marks", "set", "items", "2024-01-01T00:00:50Z"); code != 0 {
		t.Fatalf("sluicectl marks set: exit %d", code)
	}
	// Rows 50 to 100 and the row of 2099 again; the mark moves on from the one set by hand.
	second := run("2024-01-01T00:00:50Z", 52)
	if m := markOf(); m["value"] != second.MaxCursor || m["job_id"] != second.ID {
		t.Fatalf("after the second run the mark is %v, want %s set by %s", m, second.MaxCursor, second.ID)
	}
	if code, _ := p.sluicectl(t, planner, "marks", "reset", "items"); code != 0 {
		t.Fatalf("sluicectl marks reset: exit %d", code)
	}
	run("2020-01-01T00:00:00Z", 101)
	if got := metric(t, planner, "planner_cursor_values_rejected_total", `reason="future"`); got != 3 {
		t.Fatalf("planner_cursor_values_rejected_total{reason=\"future\"} = %v, want 3", got)
	}
	if n := len(p.rows(t, "items")); n != 101 {
		t.Fatalf("%d rows in ClickHouse, want 101", n)
	}
}
