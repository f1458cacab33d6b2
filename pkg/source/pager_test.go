package source

import (
	"errors"
	"slices"
	"testing"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// TestPager walks tasks against sources that return as many records as asked, fewer (a capped page
// size) or none.
func TestPager(t *testing.T) {
	src := &sluicev1.HttpSource{Pagination: &sluicev1.Pagination{PageSize: 500}}
	offsets := func(start, end uint64, unbounded bool) *sluicev1.Task {
		return &sluicev1.Task{Slice: &sluicev1.Task_Offsets{Offsets: &sluicev1.OffsetRange{Start: start, End: end, Unbounded: unbounded}}}
	}
	pages := func(first, last uint64, unbounded bool) *sluicev1.Task {
		return &sluicev1.Task{Slice: &sluicev1.Task_Pages{Pages: &sluicev1.PageRange{First: first, Last: last, Unbounded: unbounded}}}
	}
	tests := []struct {
		name    string
		task    *sluicev1.Task
		answers []int // records the source returns, page after page
		want    []pageRequest
		err     error
	}{
		{"bounded offsets", offsets(1000, 2200, false), []int{500, 500, 200},
			[]pageRequest{{1000, 500}, {1500, 500}, {2000, 200}}, nil},
		{"source caps the page size", offsets(0, 1000, false), []int{300, 300, 300, 100},
			[]pageRequest{{0, 500}, {300, 500}, {600, 400}, {900, 100}}, nil},
		{"an empty page inside a bounded task", offsets(0, 1000, false), []int{500, 0},
			[]pageRequest{{0, 500}, {500, 500}}, errShortPage},
		{"open-ended offsets go on after a short page", offsets(0, 0, true), []int{500, 500, 120, 0},
			[]pageRequest{{0, 500}, {500, 500}, {1000, 500}, {1120, 500}}, nil},
		{"pages", pages(3, 4, false), []int{500, 500},
			[]pageRequest{{3, 500}, {4, 500}}, nil},
		{"page zero is a bounded page", pages(0, 0, false), []int{500},
			[]pageRequest{{0, 500}}, nil},
		{"open-ended pages stop at an empty page", pages(1, 0, true), []int{500, 0},
			[]pageRequest{{1, 500}, {2, 500}}, nil},
		{"open-ended pages go on after a short page", pages(1, 0, true), []int{500, 200, 0},
			[]pageRequest{{1, 500}, {2, 500}, {3, 500}}, nil},
		{"an empty bounded page", pages(1, 2, false), []int{500, 0},
			[]pageRequest{{1, 500}, {2, 500}}, errShortPage},
		{"a short page before the last page", pages(1, 5, false), []int{500, 200},
			[]pageRequest{{1, 500}, {2, 500}}, errShortPage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPager(tt.task, src)
			var got []pageRequest
			var err error
			for req, ok := p.request(); ok && len(got) < len(tt.answers); req, ok = p.request() {
				got = append(got, req)
				if err = p.check(req, tt.answers[len(got)-1]); err != nil {
					break
				}
				p.advance(req, tt.answers[len(got)-1])
			}
			if _, more := p.request(); !slices.Equal(got, tt.want) || !errors.Is(err, tt.err) || (more && err == nil) {
				t.Fatalf("pages %v, err %v, more %v; want %v, err %v", got, err, more, tt.want, tt.err)
			}
		})
	}
}
