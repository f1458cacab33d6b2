package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicedata/sluice/pkg/pipeline"
	"github.com/sluicedata/sluice/pkg/stacktest"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// pgTest is a database of the test's own with the connection to fill it, and a source over it.
type pgTest struct {
	t    *testing.T
	dsn  string
	conn *pgx.Conn
}

func newPGTest(t *testing.T) *pgTest {
	t.Helper()
	dsn := stacktest.Postgres(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	return &pgTest{t: t, dsn: dsn, conn: conn}
}

func (p *pgTest) exec(sql string, args ...any) {
	p.t.Helper()
	if _, err := p.conn.Exec(context.Background(), sql, args...); err != nil {
		p.t.Fatalf("%s: %v", sql, err)
	}
}

// source returns a postgres source of src (its DSN the test's) with the process's pools, for an
// incremental run when in is given.
func (p *pgTest) source(src *sluicev1.PostgresSource, in ...*sluicev1.Incremental) Source {
	p.t.Helper()
	src.Dsn = "${SOURCE_PG_DSN}"
	if src.BatchSize == 0 {
		src.BatchSize = 1000
	}
	if src.Timeout == nil {
		src.Timeout = durationpb.New(10 * time.Second)
	}
	pools := &Pools{MaxConns: 4}
	p.t.Cleanup(pools.Close)
	kind := &sluicev1.Source{Kind: &sluicev1.Source_Postgres{Postgres: src}}
	if len(in) > 0 {
		kind.Incremental = in[0]
	}
	s, err := New(kind, Env{
		Fetcher:      newFetcher(),
		Lookup:       func(name string) (string, bool) { return p.dsn, name == "SOURCE_PG_DSN" },
		Backoff:      pipeline.Backoff{Base: time.Millisecond, Max: time.Millisecond},
		PageDeadline: 30 * time.Second,
		Postgres:     pools,
	})
	if err != nil {
		p.t.Fatal(err)
	}
	return s
}

// readSlices reads every slice of the plan and returns the records of each.
func readSlices(t *testing.T, s Source, plan Plan) [][]json.RawMessage {
	t.Helper()
	var out [][]json.RawMessage
	for _, task := range plan.Slices {
		rd, err := s.Open(task)
		if err != nil {
			t.Fatal(err)
		}
		var records []json.RawMessage
		for rd.More() {
			r, more, err := rd.Next(context.Background())
			if err != nil {
				t.Fatalf("read %v: %v", task.GetKeys(), err)
			}
			if !more {
				break
			}
			if r.At != uint64(len(records)) {
				t.Fatalf("page at %d after %d records", r.At, len(records))
			}
			records = append(records, r.Records...)
		}
		out = append(out, records)
	}
	return out
}

// TestPostgresSkewedKeys plans 200,000 rows whose keys crowd at the low end: equal key widths would
// put nearly all of them in one range, so the plan takes quantiles, and no range holds more than
// twice the average. Every row is read exactly once, in key order within its range.
func TestPostgresSkewedKeys(t *testing.T) {
	p := newPGTest(t)
	p.exec(`CREATE TABLE events (id bigint PRIMARY KEY, name text)`)
	// 150,000 keys in 1..150,000 and 50,000 spread up to 5·10^12.
	p.exec(`INSERT INTO events SELECT g, 'e' || g FROM generate_series(1, 150000) g`)
	p.exec(`INSERT INTO events SELECT 150000 + g::bigint * 100000000, 'f' || g FROM generate_series(1, 50000) g`)
	s := p.source(&sluicev1.PostgresSource{Table: "public.events", Key: "id"})
	plan, err := s.Plan(context.Background(), 8)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Slices) != 8 || plan.Expected != -1 {
		t.Fatalf("plan: %d slices, expected %d; want 8 slices, -1", len(plan.Slices), plan.Expected)
	}
	again, err := s.Replan(plan.Extent, 8)
	if err != nil || len(again.Slices) != len(plan.Slices) {
		t.Fatalf("replan: %v, %d slices", err, len(again.Slices))
	}
	for i := range plan.Slices {
		a, b := plan.Slices[i].GetKeys(), again.Slices[i].GetKeys()
		if a.GetStart() != b.GetStart() || a.GetEnd() != b.GetEnd() {
			t.Fatalf("replan slice %d: %v, planned %v", i, b, a)
		}
	}
	parts := readSlices(t, s, plan)
	seen := map[int64]bool{}
	total := 0
	for i, records := range parts {
		total += len(records)
		if float64(len(records)) > 2*200000/8.0 {
			t.Errorf("range %d (%v) holds %d rows, more than twice the average of 25,000", i, plan.Slices[i].GetKeys(), len(records))
		}
		last := int64(-1)
		for _, r := range records {
			var row struct{ ID int64 }
			if err := json.Unmarshal(r, &row); err != nil {
				t.Fatal(err)
			}
			if row.ID <= last || seen[row.ID] {
				t.Fatalf("range %d: id %d after %d (or read twice)", i, row.ID, last)
			}
			seen[row.ID], last = true, row.ID
		}
	}
	if total != 200000 {
		t.Fatalf("read %d rows, want 200000", total)
	}
	t.Logf("ranges: %v", func() (n []int) {
		for _, r := range parts {
			n = append(n, len(r))
		}
		return n
	}())
}

// TestPostgresEvenKeys plans from min and max when the keys are even: bounds at equal widths.
func TestPostgresEvenKeys(t *testing.T) {
	p := newPGTest(t)
	p.exec(`CREATE TABLE t (id int PRIMARY KEY)`)
	p.exec(`INSERT INTO t SELECT g FROM generate_series(1, 1000) g`)
	s := p.source(&sluicev1.PostgresSource{Table: "t", Key: "id", BatchSize: 7})
	plan, err := s.Plan(context.Background(), 4)
	if err != nil {
		t.Fatal(err)
	}
	var bounds []string
	for _, sl := range plan.Slices {
		bounds = append(bounds, sl.GetKeys().GetStart()+".."+sl.GetKeys().GetEnd())
	}
	if want := []string{"..251", "251..501", "501..751", "751.."}; !slices.Equal(bounds, want) {
		t.Fatalf("ranges %v, want %v", bounds, want)
	}
	for i, records := range readSlices(t, s, plan) {
		if len(records) != 250 {
			t.Errorf("range %d: %d rows, want 250", i, len(records))
		}
	}
}

// TestPostgresTypes reads one row of every kind of value the issue names and compares the JSON
// record with what each type must become.
func TestPostgresTypes(t *testing.T) {
	p := newPGTest(t)
	p.exec(`CREATE TABLE typed (id bigint PRIMARY KEY, big bigint, amount numeric, at timestamptz, raw bytea,
		doc json, docb jsonb, note text, missing int, flag boolean, ratio double precision, tags text[], day date, uid uuid)`)
	p.exec(`INSERT INTO typed VALUES (9223372036854775807, 9007199254740993, 12345678901234567890.000000001,
		'2024-03-01 12:30:45.123456+02', '\x00ff10', '{"a": [1, {"b": null}], "n": 12345678901234567890}', '{"z": 1, "a": "x"}',
		E'line\u2028sep "q"', NULL, true, 0.1, '{a,b}', '2024-02-29', '6f1c8a2e-0000-4000-8000-000000000001')`)
	s := p.source(&sluicev1.PostgresSource{Query: "SELECT * FROM typed", Key: "id"})
	plan, err := s.Plan(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	parts := readSlices(t, s, plan)
	if len(parts) != 1 || len(parts[0]) != 1 {
		t.Fatalf("read %v, want one row", parts)
	}
	got := string(parts[0][0])
	want := `{"id":9223372036854775807,"big":9007199254740993,"amount":"12345678901234567890.000000001",` +
		`"at":"2024-03-01T10:30:45.123456+00:00","raw":"AP8Q","doc":{"a": [1, {"b": null}], "n": 12345678901234567890},` +
		`"docb":{"a": "x", "z": 1},"note":"line` + "\u2028" + `sep \"q\"","missing":null,"flag":true,"ratio":0.1,"tags":["a","b"],` +
		`"day":"2024-02-29","uid":"6f1c8a2e-0000-4000-8000-000000000001"}`
	if got != want {
		t.Fatalf("record\n got %s\nwant %s", got, want)
	}
	var at struct{ At string }
	_ = json.Unmarshal(parts[0][0], &at)
	if _, err := time.Parse(time.RFC3339Nano, at.At); err != nil {
		t.Fatalf("timestamptz %q is not RFC 3339: %v", at.At, err)
	}
	rd, _ := s.Open(plan.Slices[0])
	if key, reason := rd.Key(parts[0][0]); key != "9223372036854775807" {
		t.Fatalf("key %q (%s)", key, reason)
	}
}

// TestPostgresTextKeysAndLongBytea splits text keys by quantiles and keeps a bytea longer than
// the 76 characters after which PostgreSQL's base64 breaks lines.
func TestPostgresTextKeysAndLongBytea(t *testing.T) {
	p := newPGTest(t)
	p.exec(`CREATE TABLE docs (name text PRIMARY KEY, body bytea)`)
	p.exec(`INSERT INTO docs SELECT 'doc-' || lpad(g::text, 5, '0'), decode(repeat('ab', 200), 'hex') FROM generate_series(1, 3000) g`)
	s := p.source(&sluicev1.PostgresSource{Table: "docs", Key: "name", BatchSize: 100})
	plan, err := s.Plan(context.Background(), 3)
	if err != nil {
		t.Fatal(err)
	}
	parts := readSlices(t, s, plan)
	n := 0
	for _, records := range parts {
		n += len(records)
		if len(records) < 900 || len(records) > 1100 {
			t.Errorf("a range of %d rows; want about 1000", len(records))
		}
	}
	if n != 3000 {
		t.Fatalf("read %d rows, want 3000", n)
	}
	var row struct{ Body string }
	_ = json.Unmarshal(parts[0][0], &row)
	if strings.ContainsAny(row.Body, "\n\\") || len(row.Body) != 268 {
		t.Fatalf("body %q: want 268 characters of base64 on one line", row.Body)
	}
}

// TestPostgresDuplicateKey fails a read whose key is not unique, at a page boundary as within a
// page, instead of skipping rows.
func TestPostgresDuplicateKey(t *testing.T) {
	for _, at := range []int{3, 5} { // the duplicate row is the 4th and 5th: at the boundary of pages of 4, inside pages of 5
		t.Run(fmt.Sprint("batch_", at+1), func(t *testing.T) {
			p := newPGTest(t)
			p.exec(`CREATE TABLE d (k int, v text)`)
			p.exec(`INSERT INTO d SELECT g, 'x' FROM generate_series(1, 10) g`)
			p.exec(`INSERT INTO d VALUES (4, 'again')`)
			s := p.source(&sluicev1.PostgresSource{Table: "d", Key: "k", BatchSize: uint32(at + 1)})
			plan, err := s.Plan(context.Background(), 1)
			if err != nil {
				t.Fatal(err)
			}
			rd, _ := s.Open(plan.Slices[0])
			var failed error
			for rd.More() && failed == nil {
				_, more, err := rd.Next(context.Background())
				failed = err
				if !more {
					break
				}
			}
			var e *Error
			if !errors.As(failed, &e) || e.Class != "duplicate_key" || !strings.Contains(e.Error(), `"4"`) {
				t.Fatalf("read ended with %v, want class duplicate_key naming key 4", failed)
			}
		})
	}
}

// TestPostgresRefusals: a NULL key fails planning, a missing table is not retried, a missing
// secret is a configuration error that does not quote the DSN.
func TestPostgresRefusals(t *testing.T) {
	p := newPGTest(t)
	p.exec(`CREATE TABLE n (k int, v text)`)
	p.exec(`INSERT INTO n VALUES (1, 'a'), (NULL, 'b')`)
	_, err := p.source(&sluicev1.PostgresSource{Table: "n", Key: "k"}).Plan(context.Background(), 2)
	var e *Error
	if !errors.As(err, &e) || e.Class != "null_key" {
		t.Fatalf("NULL key: %v, want class null_key", err)
	}
	_, err = p.source(&sluicev1.PostgresSource{Table: "nope", Key: "k", MaxRetries: 5}).Plan(context.Background(), 2)
	if !errors.As(err, &e) || e.Class != "bad_query" || e.Attempts != 1 || !strings.Contains(e.Error(), "42P01") {
		t.Fatalf("missing table: %v (attempts %d), want class bad_query after one attempt", err, e.Attempts)
	}
	s, _ := New(&sluicev1.Source{Kind: &sluicev1.Source_Postgres{Postgres: &sluicev1.PostgresSource{Dsn: "${SOURCE_OTHER}", Table: "n", Key: "k"}}},
		Env{Fetcher: newFetcher(), Lookup: func(string) (string, bool) { return "", false }, Postgres: &Pools{}})
	_, err = s.Plan(context.Background(), 1)
	if !errors.As(err, &e) || e.Class != "config" || strings.Contains(err.Error(), "sluice:") {
		t.Fatalf("missing secret: %v, want class config", err)
	}
}

// TestPostgresIncremental reads only the rows whose cursor is at or after since, and plans its
// ranges over those rows.
func TestPostgresIncremental(t *testing.T) {
	p := newPGTest(t)
	p.exec(`CREATE TABLE items (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL)`)
	p.exec(`INSERT INTO items SELECT i, timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second' FROM generate_series(1, 1000) i`)
	p.exec(`INSERT INTO items SELECT i, timestamptz '2024-02-01 00:00:00+00' + i * interval '1 second' FROM generate_series(1001, 1500) i`)
	p.exec(`UPDATE items SET updated_at = '2024-03-01 00:00:00+00' WHERE id <= 10`)
	s := p.source(&sluicev1.PostgresSource{Table: "items", Key: "id", BatchSize: 100},
		&sluicev1.Incremental{CursorField: "updated_at", Since: "2024-01-01T00:16:40+00:00"})
	plan, err := s.Plan(context.Background(), 3)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	var max MaxCursor
	for i, records := range readSlices(t, s, plan) {
		t.Logf("range %d %v: %d rows", i, plan.Slices[i].GetKeys(), len(records))
		total += len(records)
		for _, r := range records {
			if c, ok := CursorValue(r, "updated_at"); ok {
				max.Add(c, time.Now())
			}
		}
	}
	if total != 511 || max.Value() != "2024-03-01T00:00:00+00:00" {
		t.Fatalf("read %d rows up to %q, want 511 up to 2024-03-01T00:00:00+00:00", total, max.Value())
	}
}

// TestPostgresColumnNames reads a table whose columns are named like the aliases of sluice's own
// queries, and a query source with quoted, mixed-case names: each row is still the row.
func TestPostgresColumnNames(t *testing.T) {
	p := newPGTest(t)
	p.exec(`CREATE TABLE "Odd" ("Id" int PRIMARY KEY, c text, q text, sluice_row text, "with space" int)`)
	p.exec(`INSERT INTO "Odd" VALUES (1, 'c1', 'q1', 'r1', 7), (2, 'c2', 'q2', 'r2', 8)`)
	for _, src := range []*sluicev1.PostgresSource{
		{Table: "public.Odd", Key: "Id"},
		{Query: `SELECT "Id", c, q, sluice_row, "with space" FROM "Odd"`, Key: "Id"},
	} {
		s := p.source(src)
		plan, err := s.Plan(context.Background(), 2)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, records := range readSlices(t, s, plan) {
			for _, r := range records {
				got = append(got, string(r))
			}
		}
		want := []string{`{"Id":1,"c":"c1","q":"q1","sluice_row":"r1","with space":7}`, `{"Id":2,"c":"c2","q":"q2","sluice_row":"r2","with space":8}`}
		if !slices.Equal(got, want) {
			t.Fatalf("%+v: read %q, want %q", src, got, want)
		}
	}
}

// TestPostgresReadOnlyPerTransaction: a query that turns its session's defaults read-write (or
// changes its time zone, or takes an advisory lock) changes nothing for the statements after it on
// the same pool: each attempt runs in a transaction read only from its BEGIN, and a connection goes
// back to the pool reset. A statement that writes fails, however its connection was used before.
func TestPostgresReadOnlyPerTransaction(t *testing.T) {
	p := newPGTest(t)
	p.exec(`CREATE TABLE ro (k int)`)
	p.exec(`INSERT INTO ro SELECT g FROM generate_series(1, 50) g`)
	p.exec(`CREATE SEQUENCE ro_seq`)
	pools := &Pools{MaxConns: 2}
	t.Cleanup(pools.Close)
	source := func(query string) Source {
		s, err := New(&sluicev1.Source{Kind: &sluicev1.Source_Postgres{Postgres: &sluicev1.PostgresSource{
			Dsn: "${SOURCE_PG_DSN}", Query: query, Key: "k", BatchSize: 20, Timeout: durationpb.New(10 * time.Second)}}},
			Env{Fetcher: newFetcher(), Lookup: func(name string) (string, bool) { return p.dsn, name == "SOURCE_PG_DSN" },
				Backoff: pipeline.Backoff{Base: time.Millisecond, Max: time.Millisecond}, PageDeadline: 30 * time.Second, Postgres: pools})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	undo := source(`SELECT k, set_config('default_transaction_read_only', 'off', false) AS ro,
		set_config('TimeZone', 'Asia/Tokyo', false) AS tz, pg_try_advisory_lock(4242) AS locked FROM ro`)
	plan, err := undo.Plan(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(slices.Concat(readSlices(t, undo, plan)...)); n != 50 {
		t.Fatalf("%d rows, want 50", n)
	}

	// Every connection of the pool, once back (a release resets it in the background): as it came.
	var pool *pgxpool.Pool
	for _, pl := range pools.pools {
		pool = pl
	}
	ctx := context.Background()
	var conns []*pgxpool.Conn
	for range 2 {
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		var ro, tz string
		var locks int
		if err := c.QueryRow(ctx, `SELECT current_setting('default_transaction_read_only'), current_setting('TimeZone'),
			(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())`).Scan(&ro, &tz, &locks); err != nil {
			t.Fatal(err)
		}
		if ro != "on" || tz != "UTC" || locks != 0 {
			t.Errorf("a pooled connection has default_transaction_read_only %s, TimeZone %s and %d advisory locks", ro, tz, locks)
		}
		c.Release()
	}

	// And a statement that writes is refused on whichever connection it gets.
	for range 4 {
		_, err := source(`SELECT k, nextval('ro_seq') AS n FROM ro`).Plan(context.Background(), 1)
		var e *Error
		if !errors.As(err, &e) || e.Class != "bad_query" || !strings.Contains(err.Error(), "25006") {
			t.Fatalf("a query that writes: %v, want refused as read only (SQLSTATE 25006)", err)
		}
	}
	var written int64
	if err := p.conn.QueryRow(ctx, `SELECT last_value FROM ro_seq WHERE is_called`).Scan(&written); err == nil {
		t.Fatalf("the sequence moved to %d", written)
	}
}

// TestPostgresErrorsQuoteNoRows: an error whose message quotes a row's value says its SQLSTATE and
// class outside the process's log; the whole message, DETAIL included, is only its Diagnostic.
func TestPostgresErrorsQuoteNoRows(t *testing.T) {
	p := newPGTest(t)
	p.exec(`CREATE TABLE rows_of (k int, v text)`)
	p.exec(`INSERT INTO rows_of VALUES (1, '7'), (2, 'alice@example.com')`)
	s := p.source(&sluicev1.PostgresSource{Query: `SELECT k, v::int AS v FROM rows_of`, Key: "k"})
	plan, err := s.Plan(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := s.Open(plan.Slices[0])
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = rd.Next(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.Class != "bad_query" {
		t.Fatalf("a cast that fails on a row: %v", err)
	}
	if strings.Contains(err.Error(), "alice") || !strings.Contains(err.Error(), "SQLSTATE 22P02") || !strings.Contains(err.Error(), "data exception") {
		t.Fatalf("the error outside the log: %q", err)
	}
	if !strings.Contains(e.Diagnostic, "alice@example.com") {
		t.Fatalf("the diagnostic for the log: %q", e.Diagnostic)
	}
	// An error about objects keeps its message.
	_, err = p.source(&sluicev1.PostgresSource{Query: `SELECT k, nope FROM rows_of`, Key: "k"}).Plan(context.Background(), 1)
	if !strings.Contains(fmt.Sprint(err), `column "nope" does not exist (SQLSTATE 42703)`) {
		t.Fatalf("a missing column: %v", err)
	}
}
