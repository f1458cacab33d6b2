package chsink

import (
	"context"
	"fmt"
	"time"
	"unsafe"

	"github.com/go-faster/city"
	"github.com/sluicedata/sluice/pkg/chconn"
)

// ShardingKey is the expression a Distributed table created by sluice shards its rows by:
// cityHash64 of the column, which the loader computes itself (HashColumn) to send each row straight
// to its shard.
func ShardingKey(column string) string { return "cityHash64(`" + column + "`)" }

// shardable reports why a column of type t cannot be a sharding key the loader computes: its
// cityHash64 is computed here for strings, integers, booleans, Date and DateTime only.
func shardable(t *Type) error {
	switch {
	case t.Nullable:
		return fmt.Errorf("it is %s, and a sharding key may not be Nullable", t.Name)
	case t.Kind == KindString, t.Kind == KindInt, t.Kind == KindUint, t.Kind == KindBool,
		t.Kind == KindDate, t.Kind == KindDateTime:
		return nil
	}
	return fmt.Errorf("it is %s; the loader routes rows by a String, integer, Bool, Date or DateTime column", t.Name)
}

// HashColumn returns cityHash64 of each value of a column, as ClickHouse computes it for the
// column's type (18.16 and current releases alike): CityHash64 v1.0.2 of a string's bytes; for a
// number, Date or DateTime, a 64-bit mix of its bits widened to 64 (IntHash64 with ClickHouse's
// salt). col is a column as Block.Column returns it.
func HashColumn(t *Type, col any) ([]uint64, error) {
	switch vals := col.(type) {
	case []string:
		return hashAll(vals, func(s string) uint64 { return city.CH64(unsafe.Slice(unsafe.StringData(s), len(s))) }), nil
	case []int8:
		return hashAll(vals, func(v int8) uint64 { return intHash64(uint64(uint8(v))) }), nil
	case []int16:
		return hashAll(vals, func(v int16) uint64 { return intHash64(uint64(uint16(v))) }), nil
	case []int32:
		return hashAll(vals, func(v int32) uint64 { return intHash64(uint64(uint32(v))) }), nil
	case []int64:
		return hashAll(vals, func(v int64) uint64 { return intHash64(uint64(v)) }), nil
	case []uint8:
		return hashAll(vals, func(v uint8) uint64 { return intHash64(uint64(v)) }), nil
	case []uint16:
		return hashAll(vals, func(v uint16) uint64 { return intHash64(uint64(v)) }), nil
	case []uint32:
		return hashAll(vals, func(v uint32) uint64 { return intHash64(uint64(v)) }), nil
	case []uint64:
		return hashAll(vals, intHash64), nil
	case []bool:
		return hashAll(vals, func(v bool) uint64 {
			if v {
				return intHash64(1)
			}
			return intHash64(0)
		}), nil
	case []time.Time:
		switch t.Kind {
		case KindDate: // days since 1970-01-01, a UInt16
			return hashAll(vals, func(v time.Time) uint64 {
				return intHash64(uint64(uint16(v.Unix() / 86400)))
			}), nil
		case KindDateTime: // seconds, a UInt32
			return hashAll(vals, func(v time.Time) uint64 { return intHash64(uint64(uint32(v.Unix()))) }), nil
		}
	}
	return nil, fmt.Errorf("no cityHash64 for a column of %s held as %T", t.Name, col)
}

func hashAll[T any](vals []T, h func(T) uint64) []uint64 {
	out := make([]uint64, len(vals))
	for i, v := range vals {
		out[i] = h(v)
	}
	return out
}

// intHash64 is ClickHouse's IntHash64Impl: its salt, then the MurmurHash3 finalizer.
func intHash64(x uint64) uint64 {
	x ^= 0x4CF2D2BAAE6DA887
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// CheckHash asks the server for cityHash64 of values of each type the loader routes by and
// compares them with HashColumn's: a server that computes another function would have the
// Distributed table look for rows on other shards than the loader sent them to.
func CheckHash(ctx context.Context, conn *chconn.Conn) error {
	at := time.Date(2024, 2, 29, 13, 14, 15, 0, time.UTC)
	probes := []struct {
		sql  string
		typ  string
		vals any
	}{
		{"cityHash64('sluice')", "String", []string{"sluice"}},
		{"cityHash64('')", "String", []string{""}},
		{"cityHash64(toUInt64(18446744073709551615))", "UInt64", []uint64{18446744073709551615}},
		{"cityHash64(toInt64(-42))", "Int64", []int64{-42}},
		{"cityHash64(toInt32(-1))", "Int32", []int32{-1}},
		{"cityHash64(toUInt8(7))", "UInt8", []uint8{7}},
		{"cityHash64(toDate('2024-02-29'))", "Date", []time.Time{at}},
		{"cityHash64(toDateTime('2024-02-29 13:14:15', 'UTC'))", "DateTime", []time.Time{at}},
	}
	sql := "SELECT "
	for i, p := range probes {
		if i > 0 {
			sql += ", "
		}
		sql += p.sql
	}
	got := make([]uint64, len(probes))
	dest := make([]any, len(probes))
	for i := range got {
		dest[i] = &got[i]
	}
	if err := conn.QueryRow(ctx, sql).Scan(dest...); err != nil {
		return fmt.Errorf("ask the server for cityHash64: %w", err)
	}
	for i, p := range probes {
		t, _ := ParseType(p.typ)
		want, err := HashColumn(t, p.vals)
		if err != nil {
			return err
		}
		if want[0] != got[i] {
			return fmt.Errorf("the server's %s is %d, the loader's %d: it cannot route rows to the shards a Distributed table reads them from", p.sql, got[i], want[0])
		}
	}
	return nil
}
