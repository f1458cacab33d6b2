package chsink

import (
	"context"
	"strings"
	"testing"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestSchemaRefusals checks what a schema must be.
func TestSchemaRefusals(t *testing.T) {
	i64 := mustType(t, "Int64")
	for _, c := range []struct {
		s    Schema
		want string
	}{
		{Schema{Columns: []Column{{Name: "a", Type: i64, Path: "a"}, {Name: "a", Type: i64, Path: "b"}}, OrderBy: []string{"a"}}, "column a: named twice"},
		{Schema{Columns: []Column{{Name: "1a", Type: i64, Path: "a"}}, OrderBy: []string{"1a"}}, `column "1a": a name is letters`},
		{Schema{Columns: []Column{{Name: "a", Path: "a"}}, OrderBy: []string{"a"}}, "column a: a type is required"},
		{Schema{Columns: []Column{{Name: "a", Type: i64, Path: "a..b"}}, OrderBy: []string{"a"}}, "column a: from must be a dotted path"},
		{Schema{Columns: []Column{{Name: "a", Lineage: "moon"}}, OrderBy: []string{"a"}}, `column a: no lineage "moon"`},
		{Schema{Columns: []Column{{Name: "a", Type: mustType(t, "Nullable(Int64)"), Path: "a"}}, OrderBy: []string{"a"}}, "order_by: a is Nullable"},
		{Schema{Columns: []Column{{Name: "a", Type: i64, Path: "a"}}, OrderBy: []string{"b"}}, "order_by: no column b"},
		{Schema{Columns: []Column{{Name: "a", Type: i64, Path: "a"}}, OrderBy: []string{"a"}, Version: "a"}, "version: a must be a UInt column"},
	} {
		if _, err := NewSchema(c.s); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.s, err, c.want)
		}
	}
}

// TestSchemaTables creates the raw landing table and a typed table from their schemas on the real
// ClickHouse, and finds each the way the schema describes it.
func TestSchemaTables(t *testing.T) {
	cfg := stacktest.ClickHouse(t)
	ctx := context.Background()
	conn, err := chconn.Open(ctx, cfg, stacktest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	typed, err := NewSchema(Schema{Columns: []Column{
		{Name: "id", Type: mustType(t, "Int64"), Path: "id"},
		{Name: "source", Lineage: FromJob},
		{Name: "amount", Type: mustType(t, "Decimal(18, 2)"), Path: "order.amount"},
		{Name: "tags", Type: mustType(t, "Array(String)"), Path: "tags"},
		{Name: "seen", Type: mustType(t, "Nullable(DateTime)"), Path: "seen_at"},
		{Name: "version", Lineage: FromVersion},
	}, OrderBy: []string{"id", "source"}, Version: "version"})
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*Schema{"raw": Raw, "typed": typed} {
		if err := conn.Exec(ctx, s.CreateSQL(conn.Database, name)); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, s.CreateSQL(conn.Database, name))
		}
		rows, err := conn.Query(ctx, "SELECT name, type FROM system.columns WHERE database = ? AND table = ?", conn.Database, name)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]string{}
		for rows.Next() {
			var n, typ string
			if err := rows.Scan(&n, &typ); err != nil {
				t.Fatal(err)
			}
			have[n] = typ
		}
		rows.Close()
		if wrong := s.Mismatches(have); len(wrong) > 0 {
			t.Fatalf("%s as created: %v", name, wrong)
		}
		delete(have, s.Columns[0].Name)
		if wrong := s.Mismatches(have); len(wrong) != 1 || wrong[0] != "no column "+s.Columns[0].Name {
			t.Fatalf("%s without %s: %v", name, s.Columns[0].Name, wrong)
		}
	}
	var key string
	if err := conn.QueryRow(ctx, "SELECT sorting_key FROM system.tables WHERE database = ? AND name = 'typed'", conn.Database).Scan(&key); err != nil {
		// system.tables has no sorting_key before 19.x: the DDL's ORDER BY is then read from its statement.
		if err := conn.QueryRow(ctx, "SELECT engine_full FROM system.tables WHERE database = ? AND name = 'typed'", conn.Database).Scan(&key); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(key, "id") || !strings.Contains(key, "source") {
		t.Fatalf("typed table ordered by %q, want id and source", key)
	}
}
