package deploy

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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

// BenchmarkPostgres reads PostgreSQL's own data set, pgbench_accounts at scale PG_SCALE (10 by
// default: 1,000,000 rows, `pgbench -i`), into ClickHouse twice in one run:
//
//   - the floor: `psql \copy (SELECT aid, row_to_json(a) FROM pgbench_accounts a) TO STDOUT` piped
//     into `clickhouse-client … FORMAT TabSeparated`, the least work that lands the rows;
//   - sluice: the planner, an extractor and a loader, real processes, the table in 8 key ranges.
//
// PROFILE_DIR=dir writes CPU and heap profiles of the extractor and the loader there, taken in
// the first 5 seconds of sluice's run.
//
// row_to_json of a pgbench_accounts row is the payload sluice writes for it (no numeric or bytea
// column, which sluice writes otherwise), and its key is aid as text: the two tables are checked to
// hold the same keys and payloads (count and a sum of cityHash64) before the figures are printed.
// It reports records/s of both, their ratio, and the CPU seconds per million records of the
// extractor, the loader and ClickHouse, and of psql and clickhouse-client for the floor.
func BenchmarkPostgres(b *testing.B) {
	stacktest.Require(b)
	scale := envInt("PG_SCALE", 10)
	n := scale * 100_000
	for range b.N {
		dsn := stacktest.Postgres(b)
		pgbench := exec.Command("pgbench", "-i", "-q", "-s", strconv.Itoa(scale), dsn)
		if out, err := pgbench.CombinedOutput(); err != nil {
			b.Fatalf("pgbench -i: %v\n%s", err, tail(out, 2000))
		}
		p := newPipeline(b, demosource.DefaultConfig())
		chPid := stackPid(b, "clickhouse/clickhouse.pid")
		settle(b, p.conn)
		floorRate, floorCPU, floorCH := pgFloor(b, p, dsn, chPid)

		env := p.with(map[string]string{"SOURCE_PG_DSN": dsn})
		dir := os.Getenv("PROFILE_DIR")
		if dir != "" {
			env["SLUICE_PPROF"] = "true"
		}
		planner := start(b, "planner", env)
		extractor := start(b, "extractor", env)
		loader := start(b, "loader", env)
		base := planner.ready(b)
		extractorURL := extractor.ready(b)
		loaderURL := loader.ready(b)
		procs := map[string]int{"extractor": extractor.cmd.Process.Pid, "loader": loader.cmd.Process.Pid, "clickhouse": chPid}
		settle(b, p.conn)
		before := cpuOf(procs)
		began := time.Now()
		j := submit(b, base, `name: bench
source: {type: postgres, dsn: "${SOURCE_PG_DSN}", table: pgbench_accounts, key: aid}
tasks: 8
sink: {table: bench}
`)
		var profiled sync.WaitGroup
		if dir != "" { // the first 5 seconds of the job, for go tool pprof
			for name, url := range map[string]string{"extractor": extractorURL, "loader": loaderURL} {
				profiled.Go(func() { profile(b, url, filepath.Join(dir, "postgres-"+name+".pprof")) })
			}
		}
		j = await(b, base, j.ID, 20*time.Minute)
		took := time.Since(began)
		profiled.Wait()
		after := cpuOf(map[string]int{"extractor": procs["extractor"], "loader": procs["loader"]})
		if j.State != "succeeded" || j.Records.Loaded != uint64(n) {
			b.Fatalf("job ended %+v", j)
		}
		settle(b, p.conn)
		after["clickhouse"] = cpuOf(map[string]int{"clickhouse": chPid})["clickhouse"]
		samePayloads(b, p, n)

		m := float64(n) / 1e6
		rate := float64(n) / took.Seconds()
		per := func(name string) float64 { return (after[name] - before[name]) / m }
		fmt.Printf("\nsluice postgres benchmark: pgbench_accounts, %d rows (scale %d), 8 key ranges, 1 extractor, 1 loader\n", n, scale)
		fmt.Printf("  %-44s %10.0f records/s  psql+clickhouse-client %.2f, ClickHouse %.2f CPU-s/M\n",
			"floor: psql \\copy | clickhouse-client", floorRate, floorCPU, floorCH)
		fmt.Printf("  %-44s %10.0f records/s  extractor %.2f, loader %.2f, ClickHouse %.2f CPU-s/M  (%.2f s)\n",
			"sluice: submit to loaded", rate, per("extractor"), per("loader"), per("clickhouse"), took.Seconds())
		fmt.Printf("  %-44s %10.2f\n", "ratio sluice/floor", rate/floorRate)
		summarize(b, "postgres: pgbench_accounts (ext+load+CH)", rate, floorRate, "rec/s",
			fmt.Sprintf("%.2f", per("extractor")+per("loader")+per("clickhouse")), 0)
		summarize(b, "  its floor: psql \\copy | clickhouse-client", floorRate, 0, "rec/s", fmt.Sprintf("%.2f", floorCPU+floorCH), 0)
		b.ReportMetric(rate, "records/s")
		b.ReportMetric(floorRate, "floor-records/s")
		b.ReportMetric(rate/floorRate, "ratio")
		b.ReportMetric(per("extractor"), "extractor-cpu-s/M")
		b.ReportMetric(per("loader"), "loader-cpu-s/M")
	}
}

// pgFloor lands pgbench_accounts in the table floor (key, payload) through psql's \copy piped into
// clickhouse-client, and returns records/s, the two processes' CPU seconds per million records and
// ClickHouse's.
func pgFloor(b *testing.B, p *deployment, dsn string, chPid int) (rate, cpu, ch float64) {
	b.Helper()
	ctx := context.Background()
	if err := p.conn.Exec(ctx, "CREATE TABLE floor (key String, payload String) ENGINE = MergeTree ORDER BY key"); err != nil {
		b.Fatal(err)
	}
	host, port, err := net.SplitHostPort(p.ch.Addr[0])
	if err != nil {
		b.Fatal(err)
	}
	psql := exec.Command("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn,
		"-c", `\copy (SELECT aid::text, row_to_json(a)::text FROM pgbench_accounts a) TO STDOUT`)
	args := []string{"--host", host, "--port", port, "--user", p.ch.Username, "--database", p.ch.Database,
		"--query", "INSERT INTO floor FORMAT TabSeparated"}
	if p.ch.Password != "" {
		args = append(args, "--password", p.ch.Password.Reveal())
	}
	client := exec.Command("clickhouse-client", args...)
	pipe, err := psql.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	client.Stdin = pipe
	var psqlErr, clientErr strings.Builder
	psql.Stderr, client.Stderr = &psqlErr, &clientErr
	before := cpuOf(map[string]int{"clickhouse": chPid})
	began := time.Now()
	if err := psql.Start(); err != nil {
		b.Fatal(err)
	}
	if err := client.Start(); err != nil {
		b.Fatal(err)
	}
	perr, cerr := psql.Wait(), client.Wait()
	took := time.Since(began)
	if perr != nil || cerr != nil {
		b.Fatalf("floor: psql %v %s; clickhouse-client %v %s", perr, psqlErr.String(), cerr, clientErr.String())
	}
	settle(b, p.conn)
	after := cpuOf(map[string]int{"clickhouse": chPid})
	var rows uint64
	if err := p.conn.QueryRow(ctx, "SELECT count() FROM floor").Scan(&rows); err != nil {
		b.Fatal(err)
	}
	if rows == 0 {
		b.Fatal("floor: no rows landed")
	}
	m := float64(rows) / 1e6
	procs := (psql.ProcessState.UserTime() + psql.ProcessState.SystemTime() +
		client.ProcessState.UserTime() + client.ProcessState.SystemTime()).Seconds()
	return float64(rows) / took.Seconds(), procs / m, (after["clickhouse"] - before["clickhouse"]) / m
}

// samePayloads checks that the floor and sluice landed the same n keys with the same payloads, so
// that the two figures compare the same work.
func samePayloads(b *testing.B, p *deployment, n int) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sums := func(from string) (rows, keys, payloads uint64) {
		err := p.conn.QueryRow(ctx, "SELECT count(), sum(cityHash64(key)), sum(cityHash64(key, payload)) FROM "+from).
			Scan(&rows, &keys, &payloads)
		if err != nil {
			b.Fatal(err)
		}
		return rows, keys, payloads
	}
	fr, fk, fp := sums("floor")
	sr, sk, sp := sums("bench FINAL") // a task run again lands its rows again until a merge
	if fr != uint64(n) || sr != uint64(n) || fk != sk || fp != sp {
		b.Fatalf("the floor and sluice landed different rows: floor %d rows (keys %x, payloads %x), sluice %d (keys %x, payloads %x)",
			fr, fk, fp, sr, sk, sp)
	}
}
