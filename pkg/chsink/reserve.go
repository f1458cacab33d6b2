package chsink

import (
	"reflect"
	"unsafe"

	"github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
)

// strOffset is where a clickhouse-go String column keeps its ch-go bytes, or -1 when its layout is
// not the one reserve was written for (then columns grow as clickhouse-go grows them).
var strOffset = func() int {
	f, ok := reflect.TypeFor[column.String]().FieldByName("col")
	if !ok || f.Type != reflect.TypeFor[proto.ColStr]() {
		return -1
	}
	return int(f.Offset)
}()

// reserve makes room in col, when it is a String column, for vals, so that it is allocated once.
// Appended row by row, the bytes of a 50,000-row column of 300-byte records grew a quarter at a
// time: five times their size allocated and copied per insert, most of the loader's allocations
// and a third of its peak memory (BenchmarkLoader, profiled).
func reserve(col column.Interface, vals []string) bool {
	s, ok := col.(*column.String)
	if !ok || strOffset < 0 {
		return false
	}
	c := (*proto.ColStr)(unsafe.Add(unsafe.Pointer(s), strOffset))
	size := 0
	for _, v := range vals {
		size += len(v)
	}
	if cap(c.Buf)-len(c.Buf) < size {
		buf := make([]byte, len(c.Buf), len(c.Buf)+size)
		copy(buf, c.Buf)
		c.Buf = buf
	}
	if cap(c.Pos)-len(c.Pos) < len(vals) {
		pos := make([]proto.Position, len(c.Pos), len(c.Pos)+len(vals))
		copy(pos, c.Pos)
		c.Pos = pos
	}
	return true
}
