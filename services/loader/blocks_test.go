package main

import (
	"fmt"
	"strings"
	"testing"
)

// TestBlocksMetadata round-trips blocks through commit metadata, merges the inserted blocks of a
// table that follow one another, and, past the metadata bound, leaves out inserted blocks first
// and reports when planned ones do not fit.
func TestBlocksMetadata(t *testing.T) {
	users, orders := tableKey{"users", ""}, tableKey{"orders", "00112233aabbccdd"}
	blocks := []*block{
		{table: users, first: 10, last: 19, loadedAt: 1, inserted: true},
		{table: orders, first: 12, last: 30, loadedAt: 1},
		{table: users, first: 20, last: 29, loadedAt: 2, inserted: true},
		{table: users, first: 31, last: 40, loadedAt: 3},
	}
	meta, ok := encodeBlocks(compact(blocks))
	if want := "sluice1 i:users::10-29@2 p:orders:00112233aabbccdd:12-30@1 p:users::31-40@3"; !ok || meta != want {
		t.Fatalf("metadata %q, want %q", meta, want)
	}
	if got, _ := encodeBlocks(decodeBlocks(meta)); got != meta {
		t.Fatalf("decoded and encoded again: %q", got)
	}
	if blocks[0].last != 19 {
		t.Fatal("compact changed the blocks it was given")
	}
	for _, bad := range []string{"", "sluice2 p:a::1-2@3", "sluice1 p:a::2-1@3", "sluice1 x:a::1-2@3", "sluice1 p:a:1-2@3", "sluice1 p:a::1-2"} {
		if got := decodeBlocks(bad); got != nil {
			t.Errorf("%q decoded as %v", bad, got)
		}
	}

	// Past the bound: inserted blocks go first, oldest first; planned ones stay, or do not fit.
	var many []*block
	for i := range 200 {
		many = append(many, &block{table: tableKey{fmt.Sprintf("table_%03d", i), ""}, first: int64(i * 10), last: int64(i*10 + 9), inserted: i < 150})
	}
	meta, ok = encodeBlocks(compact(many))
	if !ok || len(meta) > maxMetadata || strings.Contains(meta, "table_000") || !strings.Contains(meta, "p:table_150:") || !strings.Contains(meta, "p:table_199:") {
		t.Fatalf("%v, %d bytes: %.200s…", ok, len(meta), meta)
	}
	for i := range many {
		many[i].inserted = false
	}
	if fits(many) {
		t.Fatal("200 planned blocks fit in the metadata")
	}
}
