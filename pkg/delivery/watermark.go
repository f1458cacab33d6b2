package delivery

// Watermark is where a member may commit one partition it owns: up to the lowest offset it took and
// has not finished, and never past what it read. Work finishes out of order (tasks of different
// lengths, tables that insert at their own pace); the commit moves in offset order, so that work
// finished early never lets it pass work that is not (a failed batch dropped and the next good one
// committed past it is how pipelines lose data with lag looking healthy).
//
// A watermark is built afresh for each commit from what the member knows of the partition: start
// it with NewWatermark, Hold every offset that is not done, and ask Offset.
type Watermark struct {
	committed, next int64
	low             int64
	held            bool
}

// NewWatermark starts the watermark of a partition whose commit is at committed (-1 when none is
// known), and which this member's ownership read up to next: one past the highest offset it took,
// or where its reading starts (-1 when nothing is known).
func NewWatermark(committed, next int64) Watermark {
	return Watermark{committed: committed, next: next}
}

// Hold notes an offset taken and not done: in the air, waiting, or given up on so that the
// partition's next owner gets it again. The watermark stays at or below it.
func (w *Watermark) Hold(offset int64) {
	if !w.held || offset < w.low {
		w.low, w.held = offset, true
	}
}

// Offset returns the offset to commit: the lowest offset held, or next when that is lower (or
// nothing is held); never below committed, which the partition's last owner may have moved past
// what this member read. ok is false when neither is known: there is nothing to commit.
func (w Watermark) Offset() (offset int64, ok bool) {
	offset = w.next
	if w.held && w.low < offset {
		offset = w.low
	}
	offset = max(offset, w.committed)
	return offset, offset >= 0
}
