package source

import (
	"errors"
	"fmt"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// pageRequest is one page of a task: where it starts and how many records it asks for.
type pageRequest struct {
	start uint64 // the offset, or the page number
	limit uint64
}

// errShortPage is a page with fewer records than the task still expects before its end: an empty
// page inside a bounded task, or a short page before the last page of a page-numbered one (the
// source caps the page size below the job's, and page numbers would skip records). Ending the task
// there would claim records that were never extracted.
var errShortPage = errors.New("the source returned a short page before the end of the task")

// errOverflow is a page with more records than its request asked for, or than its task's range has
// left: a source that ignores the limit, or a total that lies. Taking it would claim records the plan
// never had (and one page could be millions of them); it is fetched again under the source's
// retries, then the task fails with class page_overflow, as one letter.
var errOverflow = errors.New("the source returned more records than the page asked for")

// pager walks a task's pages. Offset pages advance by the records the source returned, so that a
// source capping the page size below the job's skips nothing.
type pager struct {
	pages     bool // page numbers, else offsets
	limited   bool // the requests carry the page size (a limit parameter)
	next      uint64
	end       uint64 // offsets: exclusive end; pages: the last page
	unbounded bool
	size      uint64
	done      bool
}

func newPager(task *sluicev1.Task, src *sluicev1.HttpSource) *pager {
	p := &pager{size: uint64(src.Pagination.GetPageSize()), limited: src.GetPagination().GetLimitParam() != ""}
	if p.size == 0 {
		p.size = 100
	}
	switch s := task.Slice.(type) {
	case *sluicev1.Task_Offsets:
		p.next, p.end, p.unbounded = s.Offsets.Start, s.Offsets.End, s.Offsets.Unbounded
		p.done = !p.unbounded && p.next >= p.end
	case *sluicev1.Task_Pages:
		p.pages = true
		p.next, p.end, p.unbounded = s.Pages.First, s.Pages.Last, s.Pages.Unbounded
		p.done = !p.unbounded && p.next > p.end
	default:
		p.done = true
	}
	return p
}

// request returns the next page to fetch, or false when the task is complete.
func (p *pager) request() (pageRequest, bool) {
	if p.done {
		return pageRequest{}, false
	}
	limit := p.size
	if !p.pages && !p.unbounded {
		limit = min(p.size, p.end-p.next)
	}
	return pageRequest{start: p.next, limit: limit}, true
}

// check says whether a page of got records may be taken: errShortPage when it ends the task early,
// errOverflow when it holds more than was asked for or than the task's range has left.
// Offset pages may be short (a source that caps the page size): the next page starts after them.
func (p *pager) check(req pageRequest, got int) error {
	switch {
	case p.limited && uint64(got) > req.limit:
		return fmt.Errorf("%w: page at %d had %d records, and asked for %d", errOverflow, req.start, got, req.limit)
	case !p.pages && !p.unbounded && uint64(got) > p.end-req.start:
		return fmt.Errorf("%w: page at %d had %d records, and the task's range has %d left", errOverflow, req.start, got, p.end-req.start)
	case p.unbounded:
		return nil
	}
	switch {
	case got == 0 && (p.pages || req.start < p.end):
		return fmt.Errorf("%w: page at %d was empty", errShortPage, req.start)
	case p.pages && uint64(got) < req.limit && req.start < p.end:
		return fmt.Errorf("%w: page %d had %d of %d records and is not the task's last page (%d): the source caps the page size below the job's page_size",
			errShortPage, req.start, got, req.limit, p.end)
	}
	return nil
}

// advance records that the page asked for returned got records, which check took. An open-ended
// task ends only at an empty page: a short page may be all a source that caps its page size gives.
func (p *pager) advance(req pageRequest, got int) {
	switch {
	case got == 0:
		p.done = true
	case p.pages:
		p.next++
		p.done = !p.unbounded && p.next > p.end
	default:
		p.next += uint64(got)
		p.done = !p.unbounded && p.next >= p.end
	}
}
