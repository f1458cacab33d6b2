package deploy

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// pgRows is how many rows TestPipelinePostgres reads: 150,000 with keys 1..150,000 and 50,000
// spread up to 5·10^12, the last at the largest bigint.
const pgRows = 200_000

// pgID is the key of row i: crowded at the low end, so that ranges of equal widths would be uneven.
func pgID(i int64) int64 {
	switch {
	case i == pgRows-1:
		return 1<<63 - 1
	case i < 150_000:
		return i + 1
	default:
		return 150_000 + (i-149_999)*100_000_000
	}
}

// pgRecord is the JSON record row i must become: bigint exact, numeric as a string, timestamptz as
// RFC 3339, bytea as base64, jsonb nested, NULL as null.
func pgRecord(i int64) string {
	raw := make([]byte, 8)
	binary.BigEndian.PutUint64(raw, uint64(i))
	note := `"n` + strconv.FormatInt(i, 10) + `"`
	if i%7 == 0 {
		note = "null"
	}
	at := time.Unix(1577836800+i, 0).UTC().Format("2006-01-02T15:04:05-07:00")
	return fmt.Sprintf(`{"id":%d,"amount":"%d.%02d","at":"%s","raw":"%s","doc":{"i": %d, "tags": ["a", %d]},"note":%s}`,
		pgID(i), i, i%100, at, base64.StdEncoding.EncodeToString(raw), i, i%3, note)
}

// TestPipelinePostgres reads a PostgreSQL table of 200,000 rows with skewed keys through the real
// services into ClickHouse: the planner splits it by quantiles into 8 ranges none of which holds
// more than twice the average, two extractors share them, and every row lands once with its
// types kept.
func TestPipelinePostgres(t *testing.T) {
	stacktest.Require(t)
	dsn, _ := pgTable(t,
		`CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric, at timestamptz, raw bytea, doc jsonb, note text)`,
		fmt.Sprintf(`INSERT INTO orders SELECT
			CASE WHEN i = %[1]d - 1 THEN 9223372036854775807 WHEN i < 150000 THEN i + 1 ELSE 150000 + (i - 149999) * 100000000 END,
			(i || '.' || lpad((i %% 100)::text, 2, '0'))::numeric,
			timestamptz '2020-01-01 00:00:00+00' + i * interval '1 second',
			int8send(i),
			jsonb_build_object('i', i, 'tags', jsonb_build_array('a', i %% 3)),
			CASE WHEN i %% 7 = 0 THEN NULL ELSE 'n' || i END
			FROM generate_series(0::bigint, %[1]d - 1) i`, pgRows))

	p := newPipeline(t, demosource.DefaultConfig())
	env := p.with(map[string]string{"SOURCE_PG_DSN": dsn})
	planner := start(t, "planner", env).ready(t)
	var extractors []*proc
	for i := range 2 {
		x := start(t, fmt.Sprintf("extractor-%d", i+1), env)
		x.ready(t)
		extractors = append(extractors, x)
	}
	start(t, "loader", env).ready(t)
	j := submit(t, planner, `name: orders
source:
  type: postgres
  dsn: "${SOURCE_PG_DSN}"
  table: public.orders
  key: id
  batch_size: 5000
tasks: 8
sink:
  table: orders
`)
	j = await(t, planner, j.ID, 4*time.Minute)
	if j.State != "succeeded" || j.Tasks.Planned != 8 || j.Records.Extracted != pgRows || j.Records.Loaded != pgRows || j.Records.DeadLettered != 0 {
		t.Fatalf("job ended %+v, want succeeded with 8 ranges and %d records", j, pgRows)
	}
	for _, x := range extractors {
		if done := metric(t, x.addr(t), "extractor_tasks_total", `outcome="extracted"`); done == 0 {
			t.Fatalf("%s took no range: the work was not spread", x.name)
		}
	}
	got := p.rows(t, "orders")
	if len(got) != pgRows {
		t.Fatalf("%d distinct keys in ClickHouse, want %d", len(got), pgRows)
	}
	for i := range int64(pgRows) {
		key := strconv.FormatInt(pgID(i), 10)
		if want := pgRecord(i); got[key] != want {
			t.Fatalf("row %d (id %s) landed as\n %s\nwant\n %s", i, key, got[key], want)
		}
	}

	// No range holds more than twice the average (keys of equal widths would put 150,000 rows in one).
	qctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := p.conn.Query(qctx, "SELECT task_id, count() FROM orders FINAL GROUP BY task_id ORDER BY task_id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var sizes []uint64
	for rows.Next() {
		var task string
		var n uint64
		if err := rows.Scan(&task, &n); err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, n)
		if n > 2*pgRows/8 {
			t.Errorf("task %s read %d rows, more than twice the average %d", task, n, pgRows/8)
		}
	}
	if len(sizes) != 8 {
		t.Fatalf("rows came from %d tasks, want 8", len(sizes))
	}
	t.Logf("rows per range: %v", sizes)
}

// BenchmarkPostgres reads a PostgreSQL table of PG_ROWS rows (200,000 by default, about 200 bytes
// of JSON each) in 8 key ranges through the real services into ClickHouse, and reports records/s
// and the extractor's and loader's CPU seconds per million records, beside the baseline of one
// connection reading the same rows as JSON (SELECT row_to_json) in a loop.
func BenchmarkPostgres(b *testing.B) {
	stacktest.Require(b)
	n := envInt("PG_ROWS", 200_000)
	for range b.N {
		dsn, _ := pgTable(b,
			`CREATE TABLE bench (id bigint PRIMARY KEY, name text, amount numeric, at timestamptz, doc jsonb)`,
			fmt.Sprintf(`INSERT INTO bench SELECT i, 'user-' || i || repeat('x', 60), i * 1.25,
				timestamptz '2020-01-01 00:00:00+00' + i * interval '1 second', jsonb_build_object('i', i, 'tags', jsonb_build_array('a', 'b'))
				FROM generate_series(1, %d) i`, n),
			`ANALYZE bench`)
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			b.Fatal(err)
		}
		began := time.Now()
		rows, err := conn.Query(ctx, "SELECT row_to_json(t)::text FROM bench t ORDER BY id")
		if err != nil {
			b.Fatal(err)
		}
		read := 0
		for rows.Next() {
			read++
		}
		rows.Close()
		baseline := float64(read) / time.Since(began).Seconds()
		conn.Close(ctx)

		p := newPipeline(b, demosource.DefaultConfig())
		env := p.with(map[string]string{"SOURCE_PG_DSN": dsn})
		planner := start(b, "planner", env)
		extractor := start(b, "extractor", env)
		loader := start(b, "loader", env)
		base := planner.ready(b)
		extractor.ready(b)
		loader.ready(b)
		procs := map[string]int{"extractor": extractor.cmd.Process.Pid, "loader": loader.cmd.Process.Pid}
		before := cpuOf(procs)
		began = time.Now()
		j := submit(b, base, `name: bench
source: {type: postgres, dsn: "${SOURCE_PG_DSN}", table: bench, key: id, batch_size: 5000}
tasks: 8
sink: {table: bench}
`)
		j = await(b, base, j.ID, 20*time.Minute)
		took := time.Since(began)
		after := cpuOf(procs)
		if j.State != "succeeded" || j.Records.Loaded != uint64(n) {
			b.Fatalf("job ended %+v", j)
		}
		m := float64(n) / 1e6
		fmt.Printf("\nsluice postgres benchmark: %d rows in 8 key ranges, batches of 5000, 1 extractor, 1 loader\n", n)
		fmt.Printf("  %-34s %12.0f records/s\n", "baseline: one SELECT row_to_json", baseline)
		fmt.Printf("  %-34s %12.0f records/s  (%.2f s)\n", "end to end: submit to loaded", float64(n)/took.Seconds(), took.Seconds())
		fmt.Printf("  CPU seconds per million records: extractor %.2f, loader %.2f\n",
			(after["extractor"]-before["extractor"])/m, (after["loader"]-before["loader"])/m)
		b.ReportMetric(float64(n)/took.Seconds(), "records/s")
		b.ReportMetric(baseline, "baseline-records/s")
		b.ReportMetric((after["extractor"]-before["extractor"])/m, "extractor-cpu-s/M")
		b.ReportMetric((after["loader"]-before["loader"])/m, "loader-cpu-s/M")
	}
}
