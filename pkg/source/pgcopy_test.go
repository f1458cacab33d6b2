package source

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// awkward is a table of the values whose JSON is easy to get wrong, row i of each kind in turn.
const awkward = `CREATE TABLE awkward (id bigint PRIMARY KEY, amount numeric, amounts numeric[], at timestamptz,
	doc jsonb, raw_doc json, note text, tags text[], nums int[], blob bytea, ratio float8, span interval, flag boolean, day date);
INSERT INTO awkward SELECT i,
	CASE i % 4 WHEN 0 THEN NULL WHEN 1 THEN 12345678901234567890.000000001 WHEN 2 THEN 'NaN' ELSE -i / 7.0 END,
	CASE WHEN i % 3 = 0 THEN NULL ELSE ARRAY[i * 1.5, NULL, 1e-20]::numeric[] END,
	CASE WHEN i % 5 = 0 THEN NULL ELSE timestamptz '2024-02-29 23:59:59.999999+05:30' + i * interval '1 hour 1 second' END,
	CASE i % 3 WHEN 0 THEN NULL WHEN 1 THEN jsonb_build_object('t', E'tab\there', 'n', 1e30, 'u', 'ü\u2028', 'a', jsonb_build_array(i, NULL)) ELSE '"just \\ a string"'::jsonb END,
	CASE WHEN i % 2 = 0 THEN E'{\n\t"kept":  "as written",\r\n "n": 1.50}'::json ELSE NULL END,
	CASE i % 6 WHEN 0 THEN NULL WHEN 1 THEN E'tab\tnewline\nreturn\rbackslash\\ quote" end' WHEN 2 THEN 'üñíçødé ✓ 𝄞'
		WHEN 3 THEN E'\\N' WHEN 4 THEN '' ELSE repeat(E'\\\t', i % 50) END,
	CASE WHEN i % 4 = 0 THEN NULL ELSE ARRAY[E'a\tb', NULL, 'c,d', E'e"f\\g', ''] END,
	ARRAY[i, NULL, -i],
	CASE WHEN i % 7 = 0 THEN NULL ELSE decode(repeat(lpad(to_hex(i % 256), 2, '0'), 1 + i % 90), 'hex') END,
	CASE i % 5 WHEN 0 THEN 'Infinity'::float8 WHEN 1 THEN 'NaN' WHEN 2 THEN 0.1 ELSE -i * 1e-300 END,
	i * interval '1 day 1 minute',
	CASE WHEN i % 3 = 0 THEN NULL ELSE i % 2 = 0 END,
	date '2000-01-01' + i
	FROM generate_series(1, 2000) i`

// readPages reads every slice of the plan with the source's readers, and returns each slice's
// records and the page places (At) it saw.
func readPages(t *testing.T, s Source, plan Plan) (records [][]json.RawMessage, at [][]uint64) {
	t.Helper()
	for _, task := range plan.Slices {
		rd, err := s.Open(task)
		if err != nil {
			t.Fatal(err)
		}
		var rs []json.RawMessage
		var as []uint64
		for rd.More() {
			r, more, err := rd.Next(context.Background())
			if err != nil {
				t.Fatalf("read %v: %v", task.GetKeys(), err)
			}
			if !more {
				break
			}
			rs, as = append(rs, r.Records...), append(as, r.At)
		}
		records, at = append(records, rs), append(at, as)
	}
	return records, at
}

// TestPostgresCopyPayloadsAsPaged reads a table of awkward values (numeric and its arrays, NaN,
// timestamptz, jsonb, json as written with its tabs and newlines, text with tabs, newlines,
// backslashes and unicode, NULLs, bytea, arrays) through the COPY reader and the paged one: every
// record is the same bytes, at the same place of the same page.
func TestPostgresCopyPayloadsAsPaged(t *testing.T) {
	p := newPGTest(t)
	p.exec(awkward)
	for _, spec := range []*sluicev1.PostgresSource{
		{Table: "awkward", Key: "id", BatchSize: 7},
		// A text key of tabs, newlines, backslashes and unicode.
		{Query: "SELECT note || E'\\t#' || id AS id, amount, doc, blob FROM awkward WHERE note IS NOT NULL", Key: "id", BatchSize: 5},
	} {
		t.Run(cmp.Or(spec.GetTable(), "query"), func(t *testing.T) {
			copied := p.source(spec)
			paged := p.source(spec)
			paged.(*pgSource).paged = true
			plan, err := copied.Plan(context.Background(), 3)
			if err != nil {
				t.Fatal(err)
			}
			rd, _ := copied.Open(plan.Slices[0])
			if _, ok := rd.(*pgCopier); !ok {
				t.Fatalf("the reader is a %T, not the COPY's", rd)
			}
			got, gotAt := readPages(t, copied, plan)
			want, wantAt := readPages(t, paged, plan)
			n := 0
			for i := range want {
				n += len(want[i])
				if len(got[i]) != len(want[i]) || fmt.Sprint(gotAt[i]) != fmt.Sprint(wantAt[i]) {
					t.Fatalf("range %d: %d records at pages %v, the paged read %d at %v", i, len(got[i]), gotAt[i], len(want[i]), wantAt[i])
				}
				for j := range want[i] {
					if !bytes.Equal(got[i][j], want[i][j]) {
						t.Fatalf("range %d record %d:\n copy  %s\n paged %s", i, j, got[i][j], want[i][j])
					}
				}
			}
			if n == 0 {
				t.Fatal("no rows read")
			}
			if want := map[string]int{"awkward": 2000, "": 2000 - 2000/6}[spec.Table]; n != want {
				t.Fatalf("%d rows, want %d", n, want)
			}
		})
	}
}

// TestPostgresCopyResumesAfterLastPage kills the COPY's connection between two pages: the next
// page starts a COPY again after the last row returned, so that every row is read once, in
// order, at the place it would have had.
func TestPostgresCopyResumesAfterLastPage(t *testing.T) {
	p := newPGTest(t)
	// 40 MB: far more than the COPY can send ahead of the reader, so that the kill cuts it.
	p.exec(`CREATE TABLE big (id int PRIMARY KEY, pad text)`)
	p.exec(`INSERT INTO big SELECT i, repeat(md5(i::text), 32) FROM generate_series(1, 40000) i`)
	s := p.source(&sluicev1.PostgresSource{Table: "big", Key: "id", BatchSize: 100, MaxRetries: 2})
	rd, err := s.Open(&sluicev1.Task{Slice: &sluicev1.Task_Keys{Keys: &sluicev1.KeyRange{}}})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.(*pgCopier).Close()
	next, retried := 1, 0
	for page := 0; rd.More(); page++ {
		if page == 3 {
			var killed int
			err := p.conn.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE datname = current_database() AND pid != pg_backend_pid() AND query LIKE 'COPY %'`).Scan(&killed)
			if err != nil || killed != 1 {
				t.Fatalf("terminated %d COPYs (%v), want 1", killed, err)
			}
		}
		r, more, err := rd.Next(context.Background())
		if err != nil {
			t.Fatalf("page %d: %v", page, err)
		}
		if !more {
			break
		}
		if r.At != uint64(next-1) {
			t.Fatalf("page %d at %d, want %d", page, r.At, next-1)
		}
		if r.Attempts > 1 {
			retried++
		}
		for _, rec := range r.Records {
			var row struct{ ID int }
			if err := json.Unmarshal(rec, &row); err != nil || row.ID != next {
				t.Fatalf("page %d: row %d (%v), want %d", page, row.ID, err, next)
			}
			next++
		}
	}
	if next != 40001 || retried != 1 {
		t.Fatalf("read up to row %d with %d pages retried; want 40000 rows and one page retried", next-1, retried)
	}
}

// TestPostgresCopyPageBounds cuts a page once its records would pass the bytes a page may hold
// (the fetcher's MaxBody), before reading the record that would pass it; a record larger than the
// bound is a page alone.
func TestPostgresCopyPageBounds(t *testing.T) {
	p := newPGTest(t)
	p.exec(`CREATE TABLE wide (id int PRIMARY KEY, pad text)`)
	// 300 kB rows, but the 8th of 3 MB; the fetcher of the tests allows 1 MiB a page.
	p.exec(`INSERT INTO wide SELECT i, repeat('x', CASE WHEN i = 8 THEN 3000000 ELSE 300000 END) FROM generate_series(1, 12) i`)
	s := p.source(&sluicev1.PostgresSource{Table: "wide", Key: "id", BatchSize: 100})
	records, at := readPages(t, s, Plan{Slices: []*sluicev1.Task{{Slice: &sluicev1.Task_Keys{Keys: &sluicev1.KeyRange{}}}}})
	if want := "[0 3 6 7 8 11]"; fmt.Sprint(at[0]) != want || len(records[0]) != 12 {
		t.Fatalf("pages at %v of %d records, want pages at %s of 12", at[0], len(records[0]), want)
	}
}

// TestPostgresCopyCancelled: a read whose context ends fails as canceled, and the COPY it left
// ends on the server and gives its connection back; so does a reader closed before its end.
func TestPostgresCopyCancelled(t *testing.T) {
	p := newPGTest(t)
	p.exec(`CREATE TABLE big (id int PRIMARY KEY, pad text)`)
	p.exec(`INSERT INTO big SELECT i, repeat(md5(i::text), 32) FROM generate_series(1, 20000) i`)
	s := p.source(&sluicev1.PostgresSource{Table: "big", Key: "id", BatchSize: 100})
	pool, err := s.(*pgSource).pool(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	copies := func(t *testing.T) (n int) {
		t.Helper()
		if err := p.conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid != pg_backend_pid() AND query LIKE 'COPY %' AND state = 'active'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// gone waits for the server to see the COPY's connection closed.
	gone := func(t *testing.T) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); copies(t) != 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the COPY still runs on the server 10 s after its reader stopped")
			}
		}
		if n := pool.Stat().AcquiredConns(); n != 0 {
			t.Fatalf("%d connections still out of the pool", n)
		}
	}
	task := &sluicev1.Task{Slice: &sluicev1.Task_Keys{Keys: &sluicev1.KeyRange{}}}

	t.Run("context", func(t *testing.T) {
		rd, _ := s.Open(task)
		ctx, cancel := context.WithCancel(context.Background())
		if _, _, err := rd.Next(ctx); err != nil {
			t.Fatal(err)
		}
		if copies(t) != 1 {
			t.Fatal("no COPY runs after the first page")
		}
		cancel()
		_, _, err := rd.Next(ctx)
		if e := AsError(err, ""); e.Class != "canceled" {
			t.Fatalf("read after the cancel: %v (class %q), want canceled", err, e.Class)
		}
		gone(t)
	})
	t.Run("closed", func(t *testing.T) {
		rd, _ := s.Open(task)
		if _, _, err := rd.Next(context.Background()); err != nil {
			t.Fatal(err)
		}
		rd.(*pgCopier).Close()
		gone(t)
	})
}

// TestPostgresCopyTimeout: a page that does not come within the source's timeout fails its
// attempt as a timeout, retried, then the read as class timeout, its message quoting no value.
func TestPostgresCopyTimeout(t *testing.T) {
	p := newPGTest(t)
	p.exec(`CREATE TABLE slow (id int PRIMARY KEY)`)
	p.exec(`INSERT INTO slow SELECT generate_series(1, 100)`)
	s := p.source(&sluicev1.PostgresSource{Query: "SELECT id, CASE WHEN id = 60 THEN pg_sleep(3)::text END AS secret_value FROM slow",
		Key: "id", BatchSize: 10, MaxRetries: 1, Timeout: durationpb.New(300 * time.Millisecond)})
	_, _, err := readUntilError(s)
	e := AsError(err, "")
	if e.Class != "timeout" || e.Attempts != 2 || strings.Contains(err.Error(), "secret") {
		t.Fatalf("%v (class %q, %d attempts), want class timeout after 2 attempts", err, e.Class, e.Attempts)
	}
}

func readUntilError(s Source) (int, uint64, error) {
	rd, err := s.Open(&sluicev1.Task{Slice: &sluicev1.Task_Keys{Keys: &sluicev1.KeyRange{}}})
	if err != nil {
		return 0, 0, err
	}
	defer rd.(*pgCopier).Close()
	n := 0
	for rd.More() {
		r, more, err := rd.Next(context.Background())
		if err != nil || !more {
			return n, r.At, err
		}
		n += len(r.Records)
	}
	return n, 0, errors.New("read to the end")
}

// TestCopyPipeIsBounded: a COPY whose reader does not read sends no more than the pipe's bound
// (and one message past it) before it waits; a reader gone stops it.
func TestCopyPipeIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pipe := newCopyPipe()
		msg := bytes.Repeat([]byte("r"), 1000)
		sent := 0
		done := make(chan error)
		go func() {
			for {
				if _, err := pipe.Write(msg); err != nil {
					done <- err
					return
				}
				sent++
			}
		}()
		synctest.Wait()
		if sent*len(msg) > copyPipeBytes+len(msg) || len(pipe.pending) < copyPipeBytes-len(msg) {
			t.Fatalf("%d bytes sent, %d pending, before the writer waits; the bound is %d", sent*len(msg), len(pipe.pending), copyPipeBytes)
		}
		s := &copyStream{pipe: pipe}
		if err := s.fill(context.Background()); err != nil || len(s.cur) != sent*len(msg) {
			t.Fatalf("took %d bytes (%v), want %d", len(s.cur), err, sent*len(msg))
		}
		synctest.Wait() // the writer fills the pipe again
		close(pipe.stop)
		if err := <-done; !errors.Is(err, errCopyStopped) {
			t.Fatalf("writer ended with %v", err)
		}
	})
}
