package chsink

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/delivery"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// TestBufferTableRefused offers a Buffer table, raw or typed, to the check at submit and to the
// loader's writer: both refuse it, the writer as a schema error (its records are held, then
// dead-lettered), since a Buffer acknowledges an insert before the rows are durable.
func TestBufferTableRefused(t *testing.T) {
	conn := openConn(t)
	ctx := context.Background()
	w := NewWriter(conn, nil)
	if err := conn.Exec(ctx, Raw.CreateSQL(conn.Database, "dest")); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, "CREATE TABLE buf AS dest ENGINE = Buffer(currentDatabase(), dest, 1, 10, 100, 10000, 1000000, 10000000, 100000000)"); err != nil {
		t.Fatal(err)
	}
	typed := mustSink(t, &sluicev1.SinkSchema{Table: "buf", FromTable: true})
	for _, sink := range []*Sink{nil, typed} {
		if err := CheckTable(ctx, conn, "buf", sink); !errors.Is(err, ErrIncompatibleTable) || !strings.Contains(err.Error(), "Buffer") {
			t.Errorf("check at submit: %v, want the Buffer refused", err)
		}
		_, err := w.Schema(ctx, "buf", sink)
		if !errors.Is(err, ErrIncompatibleTable) || !strings.Contains(err.Error(), "Buffer") || delivery.ClassOf(err) != delivery.Schema {
			t.Errorf("writer: %v, want the Buffer refused as a schema error", err)
		}
	}
	// The destination itself takes the rows.
	if err := CheckTable(ctx, conn, "dest", nil); err != nil {
		t.Fatal(err)
	}
}

// TestInsertSettings sets what an insert relies on for each engine and server: a Distributed
// table is written synchronously, a Buffer refused.
func TestInsertSettings(t *testing.T) {
	old := chconn.FeaturesOf(chconn.Version{Major: 18, Minor: 16})
	current := chconn.FeaturesOf(chconn.Version{Major: 25, Minor: 3})
	for _, c := range []struct {
		name     string
		f        chconn.Features
		engine   string
		want     clickhouse.Settings
		refusing bool
	}{
		{"18.16 MergeTree", old, "ReplacingMergeTree", clickhouse.Settings{}, false},
		{"18.16 Distributed", old, "Distributed", clickhouse.Settings{"insert_distributed_sync": 1}, false},
		{"current MergeTree", current, "MergeTree", clickhouse.Settings{"async_insert": 0, "insert_deduplication_token": "tok"}, false},
		{"current Distributed", current, "Distributed", clickhouse.Settings{"async_insert": 0, "insert_deduplication_token": "tok", "insert_distributed_sync": 1}, false},
		{"Buffer", current, "Buffer", nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := insertSettings(c.f, c.engine, "tok")
			if c.refusing != errors.Is(err, ErrBufferTable) || len(got) != len(c.want) {
				t.Fatalf("settings %v, %v; want %v", got, err, c.want)
			}
			for k, v := range c.want {
				if got[k] != v {
					t.Fatalf("settings %v, want %v", got, c.want)
				}
			}
		})
	}
}

// TestDistributedSyncSetting inserts with the settings of a Distributed table on the real server:
// the stack's server has no cluster to make a Distributed table over, so this shows the setting
// exists there and goes with an insert (Debian's 18.16 has it; current releases keep its name as an
// alias of distributed_foreground_insert).
func TestDistributedSyncSetting(t *testing.T) {
	conn := openConn(t)
	ctx := context.Background()
	w := NewWriter(conn, nil)
	if got := query(t, conn, "SELECT name FROM system.settings WHERE name = 'insert_distributed_sync'"); len(got) != 1 {
		t.Fatalf("the server has no insert_distributed_sync: %v", got)
	}
	s, err := w.Schema(ctx, "raw", nil)
	if err != nil {
		t.Fatal(err)
	}
	b := s.NewBlock(1)
	if err := b.Add(&Input{Key: "k", Record: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	settings, err := insertSettings(conn.Features, engineDistributed, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := sendBlock(clickhouse.Context(ctx, clickhouse.WithSettings(settings)), conn, "raw", b, time.Now()); err != nil {
		t.Fatalf("insert with %v: %v", settings, err)
	}
}

// TestRawTables lands the raw rows of two jobs with the same keys in a created table, where each
// keeps its rows (the sorting key holds the job's name), and in a table sluice created before it
// kept job names, which takes them as before.
func TestRawTables(t *testing.T) {
	conn := openConn(t)
	ctx := context.Background()
	w := NewWriter(conn, nil)
	if err := conn.Exec(ctx, rawByKey.CreateSQL(conn.Database, "before")); err != nil {
		t.Fatal(err)
	}
	planned := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	for _, table := range []string{"now", "before"} {
		s, err := w.Schema(ctx, table, nil)
		if err != nil {
			t.Fatal(err)
		}
		b := s.NewBlock(4)
		for i, job := range []string{"crm", "billing", "crm", "billing"} {
			in := &Input{Key: "k", Record: []byte(`{"n":` + string(rune('0'+i)) + `}`), Job: job + "-20250601t000000-abcdef",
				Source: job, Offset: int64(i), Planned: planned}
			if err := b.Add(in); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Insert(ctx, table, b, time.Now(), ""); err != nil {
			t.Fatal(err)
		}
	}
	if got := query(t, conn, "SELECT concat(job_name, ':', payload) FROM now FINAL ORDER BY job_name"); strings.Join(got, " ") != `billing:{"n":3} crm:{"n":2}` {
		t.Fatalf("rows of two jobs with one key: %q", got)
	}
	if got := query(t, conn, "SELECT sorting_key FROM system.tables WHERE database = currentDatabase() AND name = 'now'"); got[0] != "key, job_name" {
		t.Fatalf("sorting key %q", got[0])
	}
	if got := query(t, conn, "SELECT payload FROM before FINAL"); strings.Join(got, " ") != `{"n":3}` {
		t.Fatalf("rows of a table of before: %q", got)
	}
}

// TestRowVersion orders rows by their place, not by a clock: a later offset of one run wins
// whatever its extraction time, a later run wins whatever its offsets, and every version is above
// the extraction-time nanoseconds that sluice wrote before.
func TestRowVersion(t *testing.T) {
	run1 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	run2 := run1.Add(time.Second)
	s := Raw
	b := s.NewBlock(3)
	for _, in := range []*Input{
		{Key: "a", Record: []byte(`{}`), Offset: 100, Planned: run1, ExtractedAt: run1.Add(time.Hour)},
		{Key: "a", Record: []byte(`{}`), Offset: 101, Planned: run1, ExtractedAt: run1}, // extracted again by a slow clock
		{Key: "a", Record: []byte(`{}`), Offset: 3, Planned: run2, ExtractedAt: run1},   // a later run on a recreated topic
	} {
		if err := b.Add(in); err != nil {
			t.Fatal(err)
		}
	}
	v := b.Column("version").([]uint64)
	if v[0] >= v[1] || v[1] >= v[2] {
		t.Fatalf("versions %v: want increasing", v)
	}
	if before := uint64(run2.Add(365 * 24 * time.Hour).UnixNano()); v[0] <= before {
		t.Fatalf("version %d is not above %d, the nanoseconds of a year later", v[0], before)
	}
	if RowVersion(time.Time{}, 7) != 7 || RowVersion(run1, -1) != RowVersion(run1, 0) || RowVersion(run1, 1<<40) != RowVersion(run1, 1<<34-1) {
		t.Fatal("RowVersion outside its range")
	}
}
