package main

import (
	"context"
	"fmt"
	"maps"
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

// TestCommitterWatermark: each owned partition commits up to its first waiting record, or what
// it polled; a partition whose commit could not be read, or of which nothing is known, commits
// nothing; one whose blocks changed commits them even where its offset did not move.
func TestCommitterWatermark(t *testing.T) {
	t0 := tableKey{"t", ""}
	parts := map[int32]*partition{
		0: {committed: 5, start: 5, next: 20},                                                       // records wait from 9
		1: {committed: 5, start: 5, next: 20, unread: true},                                         // its commit unread
		2: {committed: -1, start: -1},                                                               // nothing known
		3: {committed: 30, start: 30, next: 30, blocks: []*block{{table: t0, first: 30, last: 39}}}, // a block planned since
		4: {committed: 40, start: 40, next: 40},                                                     // nothing new
		5: {committed: -1, start: 50, next: 53},                                                     // all done
		6: {committed: 70, start: 60, next: 65},                                                     // its last owner went further
	}
	c := newCommitter("raw", "g", parts, 1<<20)
	waiting := func(yield func(int32, int64) bool) {
		for _, w := range [][2]int64{{0, 12}, {0, 9}, {1, 6}, {6, 62}, {9, 1}} {
			if !yield(int32(w[0]), w[1]) {
				return
			}
		}
	}
	got := map[int32]int64{}
	for p, eo := range c.offsets(waiting) {
		got[p] = eo.Offset
	}
	want := map[int32]int64{0: 9, 3: 30, 5: 53}
	if !maps.Equal(got, want) {
		t.Fatalf("commit offsets %v, want %v", got, want)
	}
}

// TestCommitterPlansRecordedBlocks: a planned block recorded in the commit (by this member or the
// partition's last owner) is formed again from exactly its records once they are all polled, and
// waits, with what follows it, until they are; a block inserted already makes its records known.
func TestCommitterPlansRecordedBlocks(t *testing.T) {
	tk := tableKey{"t", ""}
	tests := []struct {
		name     string
		inserted bool
		polled   int64 // records 10 to polled-1 are waiting
		units    int
		rows     int
		known    int
		stalled  bool
	}{
		{"formed again", false, 20, 1, 10, 0, false},
		{"not all polled: waits", false, 15, 0, 0, 0, true},
		{"inserted: known", true, 20, 0, 0, 10, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blocks := []*block{{table: tk, first: 10, last: 19, loadedAt: 1, inserted: tt.inserted}}
			recorded, _ := encodeBlocks(blocks)
			s := &partition{committed: 10, start: 10, next: tt.polled, blocks: blocks, recorded: recorded}
			c := newCommitter("raw", "g", map[int32]*partition{0: s}, 1<<20)
			tab := &table{name: "t", rows: 100}
			for o := int64(10); o < tt.polled; o++ {
				tab.items = append(tab.items, &item{partition: 0, offset: o, owner: s, raw: []byte("x")})
			}
			plans, err := c.plan(context.Background(), []*table{tab})
			if err != nil {
				t.Fatal(err)
			}
			units, rows, known := 0, 0, 0
			for _, tp := range plans {
				units, known = len(tp.units), len(tp.known)
				for _, u := range tp.units {
					rows += len(u.items)
					if u.blk != blocks[0] {
						t.Errorf("unit of block %+v, not the one recorded", u.blk)
					}
				}
			}
			if units != tt.units || rows != tt.rows || known != tt.known || tab.stalled != tt.stalled {
				t.Fatalf("%d units of %d rows, %d known, stalled %v", units, rows, known, tab.stalled)
			}
		})
	}
}

// TestCommitterMarksOnlyItsOwnership: a flight's block is marked inserted, or planned again, only
// in the ownership it was planned in.
func TestCommitterMarksOnlyItsOwnership(t *testing.T) {
	tk := tableKey{"t", ""}
	old := &partition{blocks: []*block{{table: tk, first: 0, last: 9}}}
	next := &partition{blocks: []*block{{table: tk, first: 0, last: 9}}}
	c := newCommitter("raw", "g", map[int32]*partition{0: next}, 1<<20)
	c.mark(&unit{partition: 0, owner: old, blk: old.blocks[0]}, true)
	c.replan(&unit{partition: 0, owner: old, blk: old.blocks[0]}, nil)
	if len(next.blocks) != 1 || next.blocks[0].inserted {
		t.Fatalf("an old flight changed the next ownership's blocks: %+v", next.blocks)
	}
	c.mark(&unit{partition: 0, owner: next, blk: next.blocks[0]}, true)
	if !next.blocks[0].inserted {
		t.Fatal("the ownership's own flight marked nothing")
	}
}
