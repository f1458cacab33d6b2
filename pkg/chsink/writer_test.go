package chsink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/stacktest"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

func openConn(t *testing.T) *chconn.Conn {
	t.Helper()
	cfg := stacktest.ClickHouse(t)
	conn, err := chconn.Open(context.Background(), cfg, stacktest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// land resolves sink's schema for table, builds a block of recs and inserts it; it returns the
// refusals by record index.
func land(t *testing.T, w *Writer, table string, sink *Sink, recs ...string) map[int]error {
	t.Helper()
	ctx := context.Background()
	schema, err := w.Schema(ctx, table, sink)
	if err != nil {
		t.Fatalf("schema of %s: %v", table, err)
	}
	b := schema.NewBlock(len(recs))
	refused := map[int]error{}
	for i, r := range recs {
		if err := b.Add(&Input{Key: fmt.Sprint(i), Record: []byte(r), Job: "job-1", Offset: int64(i), ExtractedAt: time.Unix(1700000000, int64(i))}); err != nil {
			refused[i] = err
		}
	}
	if err := w.Insert(ctx, table, b, time.Now(), ""); err != nil {
		t.Fatalf("insert into %s: %v", table, err)
	}
	return refused
}

func query(t *testing.T, conn *chconn.Conn, sql string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestTypedLanding lands awkward values into a created typed table on the real ClickHouse: each
// lands exactly, a value of the wrong type is refused with its column named while its neighbours
// land, and null is told from missing where the column's policy tells them apart.
func TestTypedLanding(t *testing.T) {
	conn := openConn(t)
	w := NewWriter(conn, stacktest.Logger(t))
	long := strings.Repeat("ab\u05d0", 50_000/4)
	p := &sluicev1.SinkSchema{Table: "awkward", Create: true, Columns: []*sluicev1.SinkColumn{
		{Name: "id", Type: "Int64"},
		{Name: "big", Type: "Int64"},
		{Name: "min", Type: "Int64"},
		{Name: "umax", Type: "UInt64"},
		{Name: "f", Type: "Float64"},
		{Name: "s", Type: "String"},
		{Name: "at", Type: "DateTime"},
		{Name: "n", Type: "Nullable(Int64)"},
		{Name: "d", Type: "Int64", OnError: "default"},
		{Name: "nested", Type: "String", From: "meta"},
	}}
	sink := mustSink(t, p)
	recs := []string{
		`{"id": 1, "big": 9007199254740993, "min": -9223372036854775808, "umax": 18446744073709551615, "f": 1e308, "s": "line\u2028 nul\u0000 😀 שלום", "at": "2024-03-01T12:30:45+02:00", "n": null, "d": null, "meta": {"a": [1, {"b": null}]}}`,
		`{"id": 2, "big": 1, "min": 0, "umax": "18446744073709551615", "f": -0, "s": "` + long + `", "at": 1709296245, "meta": []}`,
		`{"id": 3, "big": 1, "min": 0, "umax": 0, "f": 0.1, "s": "", "at": 1709296245123, "n": 7, "d": 7, "meta": "text"}`,
		`{"id": 4, "big": "not a number", "min": 0, "umax": 0, "f": 0, "s": "x", "at": 0}`,
	}
	refused := land(t, w, "awkward", sink, recs...)
	if len(refused) != 1 || refused[3] == nil || !strings.Contains(refused[3].Error(), "column big") {
		t.Fatalf("refused %v, want record 3 alone, for column big", refused)
	}
	got := query(t, conn, "SELECT concat(toString(id), '|', toString(big), '|', toString(min), '|', toString(umax), '|', toString(f), '|', "+
		"toString(length(s)), '|', toString(at, 'UTC'), '|', ifNull(toString(n), 'NULL'), '|', toString(d), '|', nested, '|', _source) FROM awkward ORDER BY id")
	want := []string{
		`1|9007199254740993|-9223372036854775808|18446744073709551615|1e308|` + fmt.Sprint(len("line\u2028 nul\x00 😀 שלום")) + `|2024-03-01 10:30:45|NULL|0|{"a": [1, {"b": null}]}|users`,
		`2|1|0|18446744073709551615|-0|` + fmt.Sprint(len(long)) + `|2024-03-01 12:30:45|NULL|0|[]|users`,
		`3|1|0|0|0.1|0|2024-03-01 12:30:45|7|7|text|users`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if s := query(t, conn, "SELECT s FROM awkward WHERE id IN (1, 2) ORDER BY id"); s[0] != "line\u2028 nul\x00 😀 שלום" || s[1] != long {
		t.Fatal("strings did not land byte for byte")
	}
}

// TestTypedTables covers the tables a typed sink meets: one made beforehand that from_table reads
// (its MATERIALIZED column left to ClickHouse), two jobs whose keys overlap in one created table,
// a table that evolves, and the tables a sink cannot take.
func TestTypedTables(t *testing.T) {
	conn := openConn(t)
	ctx := context.Background()
	w := NewWriter(conn, stacktest.Logger(t))

	t.Run("from_table", func(t *testing.T) {
		if err := conn.Exec(ctx, "CREATE TABLE made (id UInt64, name String, score Nullable(Float64), tags Array(String), "+
			"upper String MATERIALIZED upper(name), _source String, _version UInt64) ENGINE = ReplacingMergeTree(_version) ORDER BY (id, _source)"); err != nil {
			t.Fatal(err)
		}
		sink := mustSink(t, &sluicev1.SinkSchema{Table: "made", FromTable: true})
		refused := land(t, w, "made", sink, `{"id": 1, "name": "ada", "score": 9.5, "tags": ["x", "y"]}`, `{"id": 2, "name": "bo"}`, `{"id": 3, "name": 5}`)
		if len(refused) != 2 || refused[1] == nil || refused[2] == nil {
			t.Fatalf("refused %v, want 1 (tags missing, not Nullable) and 2", refused)
		}
		if got := query(t, conn, "SELECT concat(toString(id), name, upper, toString(score), arrayStringConcat(tags, ','), _source) FROM made"); len(got) != 1 || got[0] != "1adaADA9.5x,yusers" {
			t.Fatalf("rows %q", got)
		}
	})

	t.Run("overlapping keys", func(t *testing.T) {
		for _, job := range []string{"crm", "billing"} {
			p := &sluicev1.SinkSchema{Table: "people", Create: true, Columns: []*sluicev1.SinkColumn{{Name: "id", Type: "Int64", From: "id"}, {Name: "k", From: "$key"}}}
			Complete(p, job)
			sink, probs := NewSink(p)
			if len(probs) > 0 {
				t.Fatal(probs)
			}
			land(t, w, "people", sink, `{"id": 1}`, `{"id": 2}`)
		}
		got := query(t, conn, "SELECT concat(k, _source) FROM people FINAL ORDER BY _source, k")
		if strings.Join(got, " ") != "0billing 1billing 0crm 1crm" {
			t.Fatalf("rows %q: two jobs' rows with the same keys collapsed", got)
		}
	})

	t.Run("evolve", func(t *testing.T) {
		sink := mustSink(t, &sluicev1.SinkSchema{Table: "grows", Create: true, OnNewField: "evolve", Columns: []*sluicev1.SinkColumn{{Name: "id", Type: "Int64"}}})
		schema, err := w.Schema(ctx, "grows", sink)
		if err != nil {
			t.Fatal(err)
		}
		b := schema.NewBlock(1)
		if err := b.Add(&Input{Record: []byte(`{"id": 1, "plan": "pro", "seats": 3, "bad name": 1}`)}); err != nil {
			t.Fatal(err)
		}
		if err := w.Evolve(ctx, "grows", b.New); err != nil {
			t.Fatal(err)
		}
		// Evolving again (another loader, say) changes nothing.
		if err := w.Evolve(ctx, "grows", b.New); err != nil {
			t.Fatal(err)
		}
		land(t, w, "grows", sink, `{"id": 2, "plan": "free", "seats": 1}`)
		got := query(t, conn, "SELECT concat(toString(id), '|', ifNull(plan, 'NULL'), '|', ifNull(toString(seats), 'NULL'), '|', toTypeName(seats)) FROM grows ORDER BY id")
		if strings.Join(got, " ") != "2|free|1|Nullable(Int64)" {
			t.Fatalf("rows %q", got)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		if err := conn.Exec(ctx, "CREATE TABLE other (id String) ENGINE = MergeTree ORDER BY id"); err != nil {
			t.Fatal(err)
		}
		typed := mustSink(t, &sluicev1.SinkSchema{Table: "other", Columns: []*sluicev1.SinkColumn{{Name: "id", Type: "Int64"}}})
		for _, c := range []struct {
			table string
			sink  *Sink
			want  error
		}{
			{"other", typed, ErrIncompatibleTable},
			{"nowhere", typed, ErrNoTable},
			{"nowhere", mustSink(t, &sluicev1.SinkSchema{Table: "nowhere", FromTable: true}), ErrNoTable},
			{"other", nil, ErrIncompatibleTable},
		} {
			_, err := w.Schema(ctx, c.table, c.sink)
			if !errors.Is(err, c.want) || delivery.ClassOf(err) != delivery.Schema {
				t.Errorf("%s: %v, want %v of class schema", c.table, err, c.want)
			}
			if cerr := CheckTable(ctx, conn, c.table, c.sink); !errors.Is(cerr, c.want) {
				t.Errorf("check %s: %v, want %v", c.table, cerr, c.want)
			}
		}
	})
}

// TestInsertInChunks: a block of 2.5 chunks goes as one insert in three sends, and the server
// makes one part of it, every row in its place, the load time on every row.
func TestInsertInChunks(t *testing.T) {
	conn := openConn(t)
	ctx := context.Background()
	w := NewWriter(conn, stacktest.Logger(t))
	table := stacktest.Name(t, "chunks")
	if err := w.EnsureTable(ctx, table); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, "SYSTEM STOP MERGES "+table); err != nil {
		t.Fatal(err)
	}
	n := sendChunkRows*2 + sendChunkRows/2
	schema, err := w.Schema(ctx, table, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := schema.NewBlock(n)
	for i := range n {
		if err := b.Add(&Input{Key: fmt.Sprint(i), Record: fmt.Appendf(nil, `{"i":%d}`, i), Job: "job-1", Offset: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	loadedAt := time.Unix(1700000000, 0)
	if err := w.Insert(ctx, table, b, loadedAt, ""); err != nil {
		t.Fatal(err)
	}
	got := query(t, conn, fmt.Sprintf("SELECT concat(toString(count()), ' ', toString(uniqExact(key)), ' ', toString(countIf(payload = concat('{\"i\":', key, '}') AND kafka_offset = toInt64(key))), ' ', toString(uniqExact(_part)), ' ', toString(min(loaded_at) = max(loaded_at))) FROM %s", table))
	if want := fmt.Sprintf("%d %d %d 1 1", n, n, n); got[0] != want {
		t.Fatalf("rows, keys, rows in place, parts, one load time: %s, want %s", got[0], want)
	}
}
