package delivery

import (
	"fmt"
	"testing"
)

// TestWatermark: the commit stops at the lowest offset not done, reaches what was read when
// everything is done, and never goes back behind the partition's commit.
func TestWatermark(t *testing.T) {
	tests := []struct {
		name            string
		committed, next int64
		held            []int64
		want            int64
		ok              bool
	}{
		{"nothing known", -1, -1, nil, 0, false},
		{"only the commit known", 40, -1, nil, 40, true},
		{"everything read is done", 40, 50, nil, 50, true},
		{"the lowest offset held", 40, 50, []int64{47, 43, 45}, 43, true},
		{"held at the first offset read", 40, 50, []int64{40}, 40, true},
		{"finished early, one before it not", -1, 8, []int64{5}, 5, true},
		{"no commit known, a task in the air", -1, 101, []int64{100}, 100, true},
		{"an earlier owner committed past what was read", 60, 50, []int64{45}, 60, true},
		{"held past what was read", 40, 50, []int64{55}, 50, true},
		{"the first offset of a partition", -1, 0, nil, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWatermark(tt.committed, tt.next)
			for _, o := range tt.held {
				w.Hold(o)
			}
			got, ok := w.Offset()
			if ok != tt.ok || (ok && got != tt.want) {
				t.Fatalf("Offset() = %d, %v; want %d, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// ExampleWatermark: of three tasks polled at 5, 6 and 7, the one at 6 finished first; the commit
// may not pass 5, which is still running.
func ExampleWatermark() {
	w := NewWatermark(5, 8) // committed at 5, read up to 7
	w.Hold(5)               // running
	w.Hold(7)               // running
	offset, _ := w.Offset()
	fmt.Println(offset)
	// Output: 5
}
