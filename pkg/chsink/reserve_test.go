package chsink

import (
	"strings"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
)

// TestReserve sizes a clickhouse-go String column once: it fails when clickhouse-go lays the column
// out otherwise, so that an upgrade does not quietly bring back the growth.
func TestReserve(t *testing.T) {
	col, err := column.Type("String").Column("payload", nil)
	if err != nil {
		t.Fatal(err)
	}
	vals := []string{`{"a":1}`, "", "ünïcode", `{"b":[1,2,3]}`}
	if _, err := col.Append(vals[:1]); err != nil {
		t.Fatal(err)
	}
	if !reserve(col, vals[1:]) {
		t.Fatal("reserve does not know clickhouse-go's String column")
	}
	many := make([]string, 10_000)
	for i := range many {
		many[i] = strings.Repeat("x", 300)
	}
	fill := func(reserved bool) float64 {
		return testing.AllocsPerRun(1, func() {
			c, _ := column.Type("String").Column("payload", nil)
			if reserved {
				reserve(c, many)
			}
			c.Append(many) //nolint:errcheck // checked below
		})
	}
	grown, allocs := fill(false), fill(true)
	if _, err := col.Append(vals[1:]); err != nil {
		t.Fatal(err)
	}
	if col.Rows() != len(vals) {
		t.Fatalf("%d rows, want %d", col.Rows(), len(vals))
	}
	for i, want := range vals {
		if got := col.Row(i, false); got != want {
			t.Errorf("row %d = %q, want %q", i, got, want)
		}
	}
	if ints, _ := column.Type("Int32").Column("n", nil); reserve(ints, vals) {
		t.Error("reserve took an Int32 column")
	}
	// The column, its bytes, its positions and Append's nulls: nothing grows.
	if allocs > 6 || grown <= allocs {
		t.Errorf("%v allocations to fill a reserved column of 10,000 rows, %v unreserved", allocs, grown)
	}
}
