package chsink

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

func mustSink(t *testing.T, p *sluicev1.SinkSchema) *Sink {
	t.Helper()
	Complete(p, "users")
	s, probs := NewSink(p)
	if len(probs) > 0 {
		t.Fatalf("sink: %v", probs)
	}
	return s
}

func mustResolve(t *testing.T, s *Sink) *Schema {
	t.Helper()
	schema, err := s.schema(nil, nil) // as the table would have it
	if err != nil {
		t.Fatal(err)
	}
	return schema
}

// TestSinkProblems checks what NewSink refuses, with the path of each problem.
func TestSinkProblems(t *testing.T) {
	col := func(name, typ, from string) *sluicev1.SinkColumn {
		return &sluicev1.SinkColumn{Name: name, Type: typ, From: from}
	}
	for _, c := range []struct {
		name string
		p    *sluicev1.SinkSchema
		want string
	}{
		{"no columns", &sluicev1.SinkSchema{Table: "t"}, "columns: a typed sink needs columns"},
		{"both", &sluicev1.SinkSchema{Table: "t", FromTable: true, Columns: []*sluicev1.SinkColumn{col("a", "Int64", "")}}, "columns: is from_table or a list"},
		{"from_table creates", &sluicev1.SinkSchema{Table: "t", FromTable: true, Create: true}, "create: a from_table sink"},
		{"bad type", &sluicev1.SinkSchema{Table: "t", Columns: []*sluicev1.SinkColumn{col("a", "Int65", "")}}, "columns[0].type"},
		{"bad lineage", &sluicev1.SinkSchema{Table: "t", Columns: []*sluicev1.SinkColumn{col("a", "", "$moon")}}, `columns[0].from: no lineage "$moon"`},
		{"loaded_at", &sluicev1.SinkSchema{Table: "t", Columns: []*sluicev1.SinkColumn{col("a", "", "$loaded_at")}}, "columns[0].from: no lineage"},
		{"null policy", &sluicev1.SinkSchema{Table: "t", Columns: []*sluicev1.SinkColumn{{Name: "a", Type: "Int64", OnError: "null"}}}, "columns[0].on_error: null needs a Nullable type"},
		{"policy", &sluicev1.SinkSchema{Table: "t", OnError: "lenient", Columns: []*sluicev1.SinkColumn{col("a", "Int64", "")}}, "on_error: must be strict, null or default"},
		{"field policy", &sluicev1.SinkSchema{Table: "t", OnNewField: "grow", Columns: []*sluicev1.SinkColumn{col("a", "Int64", "")}}, "on_new_field: must be discard, freeze or evolve"},
		{"lineage type", &sluicev1.SinkSchema{Table: "t", Columns: []*sluicev1.SinkColumn{col("p", "String", "$partition")}}, "$partition values are Int32, not String"},
		{"order of nothing", &sluicev1.SinkSchema{Table: "t", Create: true, OrderBy: []string{"b"}, Columns: []*sluicev1.SinkColumn{col("a", "Int64", "")}}, "order_by: no column b"},
		{"order without create", &sluicev1.SinkSchema{Table: "t", OrderBy: []string{"a"}, Columns: []*sluicev1.SinkColumn{col("a", "Int64", "")}}, "order_by: is the order of a created table"},
		{"named twice", &sluicev1.SinkSchema{Table: "t", Columns: []*sluicev1.SinkColumn{col("a", "Int64", ""), col("a", "String", "b")}}, "column a: named twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			Complete(c.p, "job")
			_, probs := NewSink(c.p)
			var all []string
			for _, p := range probs {
				all = append(all, p.String())
			}
			if !strings.Contains(strings.Join(all, "\n"), c.want) {
				t.Fatalf("problems %q, want one with %q", all, c.want)
			}
		})
	}
}

// TestComplete checks the columns and order a created table gets: the key column, the source
// column and the version column, ordered by key and source.
func TestComplete(t *testing.T) {
	p := &sluicev1.SinkSchema{Table: "t", Create: true, Columns: []*sluicev1.SinkColumn{{Name: "id", Type: "Int64"}}}
	s := mustResolve(t, mustSink(t, p))
	if got, want := s.Names(), []string{"id", "_key", "_source", "_version"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("columns %v, want %v", got, want)
	}
	if !reflect.DeepEqual(s.OrderBy, []string{"_key", "_source"}) || s.Version != "_version" {
		t.Fatalf("order by %v version %q", s.OrderBy, s.Version)
	}
	sql := s.CreateSQL("db", "t")
	if !strings.Contains(sql, "ReplacingMergeTree(`_version`)") || !strings.Contains(sql, "ORDER BY (`_key`, `_source`)") {
		t.Fatalf("DDL:\n%s", sql)
	}
	// A key column of the user's own is used rather than another one.
	p = &sluicev1.SinkSchema{Table: "t", Create: true, Columns: []*sluicev1.SinkColumn{{Name: "k", From: "$key"}}}
	if s := mustResolve(t, mustSink(t, p)); !reflect.DeepEqual(s.OrderBy, []string{"k", "_source"}) {
		t.Fatalf("order by %v", s.OrderBy)
	}
	// The same spec has the same id; another spec another one.
	a := &sluicev1.SinkSchema{Table: "t", Columns: []*sluicev1.SinkColumn{{Name: "id", Type: "Int64"}}}
	b := &sluicev1.SinkSchema{Table: "t", Columns: []*sluicev1.SinkColumn{{Name: "id", Type: "UInt64"}}}
	if SchemaID(a) != SchemaID(&sluicev1.SinkSchema{Table: "t", Columns: []*sluicev1.SinkColumn{{Name: "id", Type: "Int64"}}}) || SchemaID(a) == SchemaID(b) {
		t.Fatal("schema ids are not content hashes")
	}
}

// TestBlockPolicies builds rows from records with each policy: strict refuses the record naming
// the column, null and default land their values, and a missing field is told from a null one
// only where the policy says so.
func TestBlockPolicies(t *testing.T) {
	p := &sluicev1.SinkSchema{Table: "t", Columns: []*sluicev1.SinkColumn{
		{Name: "id", Type: "UInt64"},
		{Name: "n", Type: "Nullable(Int8)", OnError: "null"},
		{Name: "d", Type: "Int8", OnError: "default"},
		{Name: "e", Type: "Enum8('x' = 1, 'y' = 2)", OnError: "default"},
		{Name: "city", Type: "Nullable(String)", From: "address.city"},
		{Name: "k", From: "$key"},
		{Name: "src", From: "$source"},
	}}
	s := mustResolve(t, mustSink(t, p))
	b := s.NewBlock(4)
	add := func(rec string) error {
		return b.Add(&Input{Key: "key-" + rec[:8], Record: []byte(rec), ExtractedAt: time.Unix(1, 0)})
	}
	for _, rec := range []string{
		`{"id": 18446744073709551615, "n": 5, "d": 7, "e": "y", "address": {"city": "Haifa"}}`,
		`{"id": 1, "n": 300, "d": 300, "e": "z", "address": {"zip": 1}}`,
		`{"id": 2}`,
		`{"id": 3, "n": null, "d": null, "address": null, "extra": [1, 2]}`,
	} {
		if err := add(rec); err != nil {
			t.Fatalf("%s: %v", rec, err)
		}
	}
	if got := b.Column("id"); !reflect.DeepEqual(got, []uint64{18446744073709551615, 1, 2, 3}) {
		t.Errorf("id: %v", got)
	}
	n := b.Column("n").([]*int8)
	if *n[0] != 5 || n[1] != nil || n[2] != nil || n[3] != nil {
		t.Errorf("n: %v", n)
	}
	if got := b.Column("d"); !reflect.DeepEqual(got, []int8{7, 0, 0, 0}) {
		t.Errorf("d: %v", got)
	}
	if got := b.Column("e"); !reflect.DeepEqual(got, []string{"y", "x", "x", "x"}) {
		t.Errorf("e: %v", got)
	}
	city := b.Column("city").([]*string)
	if *city[0] != "Haifa" || city[1] != nil || city[2] != nil || city[3] != nil {
		t.Errorf("city: %v", city)
	}
	if got := b.Column("src"); !reflect.DeepEqual(got, []string{"users", "users", "users", "users"}) {
		t.Errorf("src: %v", got)
	}
	if b.Discarded != 1 {
		t.Errorf("discarded %d fields, want 1 (extra)", b.Discarded)
	}
	// Strict: the record is refused with its column named, and adds no row.
	for rec, want := range map[string]string{
		`{"id": -1}`:          "column id: -1 does not fit UInt64",
		`{"id": "x"}`:         "column id: ",
		`{"n": 1}`:            "column id: missing",
		`{"id": null}`:        "column id: null, and UInt64 is not Nullable",
		`[1, 2]`:              "the record is not a JSON object",
		`{"id": 1, "n": [1}`:  "not well-formed",
		`{"id": 9.5, "d": 1}`: "column id: ",
	} {
		err := add(rec + "        ")
		var fe *FieldError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a FieldError with %q", rec, err, want)
		}
	}
	if b.Len() != 4 {
		t.Fatalf("%d rows after refusals, want 4", b.Len())
	}
	sl := b.Slice(1, 3)
	if got := sl.Column("id"); sl.Len() != 2 || !reflect.DeepEqual(got, []uint64{1, 2}) {
		t.Fatalf("slice: %v", got)
	}
}

// TestBlockNewFields checks the three answers to a field no column takes.
func TestBlockNewFields(t *testing.T) {
	rec := []byte(`{"id": 1, "added": "2024-03-01T10:00:00Z", "more": 5}`)
	for _, c := range []struct {
		policy    string
		err       string
		discarded int
		inferred  map[string]string
	}{
		{policy: "discard", discarded: 2},
		{policy: "freeze", err: `field "added": no column takes it`},
		{policy: "evolve", discarded: 2, inferred: map[string]string{"added": "DateTime", "more": "Int64"}},
	} {
		t.Run(c.policy, func(t *testing.T) {
			p := &sluicev1.SinkSchema{Table: "t", OnNewField: c.policy, Columns: []*sluicev1.SinkColumn{{Name: "id", Type: "Int64"}}}
			b := mustResolve(t, mustSink(t, p)).NewBlock(1)
			err := b.Add(&Input{Record: rec})
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || fieldClassOf(err) != "unknown_field" {
					t.Fatalf("%v, want %q", err, c.err)
				}
				return
			}
			if err != nil || b.Discarded != c.discarded {
				t.Fatalf("err %v, discarded %d, want %d", err, b.Discarded, c.discarded)
			}
			for name, typ := range c.inferred {
				if got := b.New[name].Type(false, false); got != typ {
					t.Errorf("%s inferred %s, want %s", name, got, typ)
				}
			}
		})
	}
	// A payload column keeps the record whole, and nothing counts as discarded.
	p := &sluicev1.SinkSchema{Table: "t", Columns: []*sluicev1.SinkColumn{{Name: "id", Type: "Int64"}, {Name: "doc", From: "$record"}}}
	b := mustResolve(t, mustSink(t, p)).NewBlock(1)
	if err := b.Add(&Input{Record: rec}); err != nil || b.Discarded != 0 || b.Column("doc").([]string)[0] != string(rec) {
		t.Fatalf("err %v discarded %d doc %v", err, b.Discarded, b.Column("doc"))
	}
}

func fieldClassOf(err error) string {
	var fe *FieldError
	if errors.As(err, &fe) && fe.Field != "" && fe.Field != "*" {
		return "unknown_field"
	}
	return "other"
}

// TestEachField walks objects with escapes, nesting and odd spacing, and refuses malformed ones
// without panicking.
func TestEachField(t *testing.T) {
	var got []string
	err := eachField([]byte(" {\"a\\u0062\" : \"x\\\"}\" ,\"n\":{\"m\":[1,{\"q\":\"]\"}]},\"z\":-1.5e3 } "), func(name, raw []byte) bool {
		got = append(got, string(name)+"="+string(raw))
		return true
	})
	want := []string{`ab="x\"}"`, `n={"m":[1,{"q":"]"}]}`, `z=-1.5e3`}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("%v %q, want %q", err, got, want)
	}
	v, err := lookup([]byte(`{"n": {"m": {"k": true}}, "n": {"m": {"k": 7}}}`), []string{"n", "m", "k"})
	if err != nil || string(v) != "7" {
		t.Fatalf("lookup: %s %v, want the last n's 7", v, err)
	}
	for _, bad := range []string{``, `{`, `{"a"`, `{"a":`, `{"a":1,`, `{"a":"x`, `{"a":[1}`, `{"a":1 "b":2}`, `{1:2}`} {
		if err := eachField([]byte(bad), func([]byte, []byte) bool { return true }); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzEachField(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":{"b":[1,"]"]}}`, `{"a\"":null}`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = eachField(b, func(name, raw []byte) bool {
			_, _ = lookup(raw, []string{"x", "y"})
			return true
		})
	})
}
