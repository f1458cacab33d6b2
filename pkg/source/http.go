package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/jobspec"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// httpSource is a paginated JSON API: offsets or page numbers in the query.
type httpSource struct {
	src *sluicev1.HttpSource
	env Env
	// since is an incremental run's start, sent in its own query parameter; nil for other jobs.
	since map[string]string
}

func newHTTP(src *sluicev1.HttpSource, in *sluicev1.Incremental, env Env) *httpSource {
	h := &httpSource{src: src, env: env}
	if in.GetSince() != "" && in.GetParam() != "" {
		h.since = map[string]string{in.GetParam(): in.GetSince()}
	}
	return h
}

// query is the parameters a task's requests carry beside the pagination's: its slice's and the
// incremental run's start.
func (h *httpSource) query(task map[string]string) map[string]string {
	if h.since == nil {
		return task
	}
	q := make(map[string]string, len(task)+1)
	maps.Copy(q, task)
	maps.Copy(q, h.since)
	return q
}

func (h *httpSource) Limits() Limits {
	host := ""
	if u, err := url.Parse(h.src.GetUrl()); err == nil {
		host = u.Host
	}
	return Limits{RateLimit: h.src.GetRateLimit(), Host: host, Concurrency: int(h.src.GetConcurrency())}
}

func (h *httpSource) policy() Policy {
	pol := Policy{MaxRetries: int(h.src.GetMaxRetries()), Backoff: h.env.Backoff, Deadline: h.env.PageDeadline,
		Timeout: h.src.GetTimeout().AsDuration()}
	if pol.Timeout <= 0 {
		pol.Timeout = jobspec.DefaultTimeout
	}
	return pol
}

func (h *httpSource) pageSize() uint64 {
	if n := h.src.GetPagination().GetPageSize(); n > 0 {
		return uint64(n)
	}
	return jobspec.DefaultPageSize
}

func (h *httpSource) pages() bool {
	return h.src.GetPagination().GetType() == sluicev1.Pagination_TYPE_PAGE
}

// crawls reports whether each page says where the next is: one page after another, no extent.
func (h *httpSource) crawls() bool {
	switch h.src.GetPagination().GetType() {
	case sluicev1.Pagination_TYPE_CURSOR, sluicev1.Pagination_TYPE_NEXT_URL, sluicev1.Pagination_TYPE_LINK_HEADER:
		return true
	}
	return false
}

// Plan splits the source's extent (its total, bounded by max_records) into page-aligned slices.
// With neither a total nor max_records the extent is unknown: one open-ended slice reads until the
// first empty page.
func (h *httpSource) Plan(ctx context.Context, tasks int) (Plan, error) {
	if err := h.checkBindings(); err != nil {
		return Plan{}, err
	}
	total, err := h.discover(ctx)
	if err != nil {
		return Plan{}, err
	}
	return planHTTP(h.src, total, tasks)
}

// Replan plans again from the total that Plan found, the extent's decimal digits (-1: none).
func (h *httpSource) Replan(extent []byte, tasks int) (Plan, error) {
	total, err := strconv.ParseInt(string(extent), 10, 64)
	if err != nil || total < -1 {
		return Plan{}, &Error{Class: "bad_task", Err: fmt.Errorf("the extent of an HTTP source is its total, not %q", extent)}
	}
	return planHTTP(h.src, total, tasks)
}

// planHTTP is the plan of a source of total records (-1: unknown) in at most tasks slices. A crawl
// is one slice, its first page: each page's task publishes the next one's. With slices, each window
// is a task read to its end.
func planHTTP(src *sluicev1.HttpSource, total int64, tasks int) (Plan, error) {
	h := &httpSource{src: src}
	first := uint64(src.GetPagination().GetFirstPage())
	// open is a slice read to its end: the whole crawl, or a window's records.
	open := func() *sluicev1.Task {
		switch {
		case h.crawls():
			return &sluicev1.Task{Slice: &sluicev1.Task_Crawl{Crawl: &sluicev1.Crawl{}}}
		case h.pages():
			return &sluicev1.Task{Slice: &sluicev1.Task_Pages{Pages: &sluicev1.PageRange{First: first, Unbounded: true}}}
		default:
			return &sluicev1.Task{Slice: &sluicev1.Task_Offsets{Offsets: &sluicev1.OffsetRange{Unbounded: true}}}
		}
	}
	if src.GetSlices() != nil {
		ws, err := windows(src.GetSlices())
		if err != nil {
			return Plan{}, &Error{Class: "bad_task", Err: err}
		}
		p := Plan{Expected: -1, Extent: []byte("-1")}
		for _, w := range ws {
			t := open()
			t.Query = w
			p.Slices = append(p.Slices, t)
		}
		return p, nil
	}
	if h.crawls() {
		return Plan{Expected: -1, Slices: []*sluicev1.Task{open()}, Extent: []byte("-1")}, nil
	}
	n := total
	if max := src.GetMaxRecords(); max > 0 && (n < 0 || uint64(n) > max) {
		n = int64(max)
	}
	if n < 0 {
		return Plan{Expected: -1, Slices: []*sluicev1.Task{open()}, Extent: []byte(strconv.FormatInt(total, 10))}, nil
	}
	size := int64(h.pageSize())
	pages := (n + size - 1) / size
	count := min(int64(max(tasks, 1)), pages)
	p := Plan{Expected: n, Extent: []byte(strconv.FormatInt(total, 10))}
	for i := range count {
		from := i * pages / count
		to := (i + 1) * pages / count // pages [from, to)
		t := &sluicev1.Task{Slice: &sluicev1.Task_Offsets{Offsets: &sluicev1.OffsetRange{Start: uint64(from * size), End: uint64(min(to*size, n))}}}
		if h.pages() {
			t.Slice = &sluicev1.Task_Pages{Pages: &sluicev1.PageRange{First: first + uint64(from), Last: first + uint64(to-1)}}
		}
		p.Slices = append(p.Slices, t)
	}
	return p, nil
}

// discover reads the total from the first page when the source says where it is; -1 otherwise.
func (h *httpSource) discover(ctx context.Context) (int64, error) {
	pg := h.src.GetPagination()
	if pg.GetTotalPath() == "" || h.crawls() {
		return -1, nil
	}
	creds, err := h.credentials()
	if err != nil {
		return 0, err
	}
	start := uint64(0)
	if h.pages() {
		start = uint64(pg.GetFirstPage())
	}
	u, err := PageURL(h.src, start, h.pageSize(), h.query(nil))
	if err != nil {
		return 0, &Error{Class: "bad_request", Err: err}
	}
	pol := h.policy()
	pol.Deadline = time.Minute
	page, _, ferr := h.fetch(ctx, creds, u, h.src.RecordsPath, pg.GetTotalPath(), pol)
	if ferr != nil {
		return 0, ferr
	}
	if page.Total < 0 {
		return 0, &Error{Class: "bad_json", Err: fmt.Errorf("the first page has no integer at %q", pg.GetTotalPath())}
	}
	if page.Total > jobspec.MaxRecords && h.src.GetMaxRecords() == 0 {
		return 0, &Error{Class: "too_large", Err: fmt.Errorf("the source reports %d records, more than the %d a job may plan; set source.max_records",
			page.Total, uint64(jobspec.MaxRecords))}
	}
	return page.Total, nil
}

// Open returns a reader of an offset or page range.
func (h *httpSource) Open(task *sluicev1.Task) (Reader, error) {
	creds, err := h.credentials()
	if err != nil {
		return nil, err
	}
	switch s := task.GetSlice().(type) {
	case *sluicev1.Task_Offsets, *sluicev1.Task_Pages:
		if !h.crawls() {
			return &httpReader{h: h, creds: creds, pol: h.policy(), pager: newPager(task, h.src), query: h.query(task.Query)}, nil
		}
	case *sluicev1.Task_Crawl:
		if h.crawls() {
			chain := s.Crawl.GetChain()
			if chain == "" {
				chain = task.GetTaskId()
			}
			return &crawlReader{h: h, creds: creds, pol: h.policy(), crawl: s.Crawl, chain: chain, query: h.query(task.Query)}, nil
		}
	}
	return nil, &Error{Class: "bad_task", Err: fmt.Errorf("an HTTP source paginated by %v does not read a slice of %T",
		h.src.GetPagination().GetType(), task.GetSlice())}
}

// httpReader reads an offset or page range.
type httpReader struct {
	h     *httpSource
	creds *credentials
	pol   Policy
	pager *pager
	query map[string]string
}

func (r *httpReader) Key(record json.RawMessage) (string, string) {
	return RecordKey(record, r.h.src.Key)
}

func (r *httpReader) More() bool { return !r.pager.done }

// Then is nil: an offset or page range is read by its one task.
func (r *httpReader) Then() *sluicev1.Task { return nil }

// Next fetches the next page. A page that would end the slice early (empty, or short where page
// numbers would skip records) is fetched again under the source's retries, and then fails with
// class short_page: never a quiet end.
func (r *httpReader) Next(ctx context.Context) (Read, bool, error) {
	req, ok := r.pager.request()
	if !ok {
		return Read{}, false, nil
	}
	u, err := PageURL(r.h.src, req.start, req.limit, r.query)
	if err != nil {
		return Read{}, false, &Error{Class: "bad_task", Err: err}
	}
	var (
		page  Page
		ferr  *Error
		total int
		class = "short_page"
	)
	src, pol := r.h.src, r.pol
	_, err = r.h.env.Fetcher.Retry.Do(ctx, "fetch", delivery.Policy{Backoff: pol.Backoff, MaxAttempts: pol.MaxRetries + 1, Deadline: pol.Deadline},
		func(int) error {
			var attempts int
			page, attempts, ferr = r.h.fetch(ctx, r.creds, u, src.RecordsPath, src.GetPagination().GetTotalPath(), pol)
			total += attempts
			if ferr != nil {
				return delivery.New(delivery.Data, ferr.Class, ferr) // FetchPage spent the retries
			}
			if err := r.pager.check(req, len(page.Records)); err != nil {
				if class = "short_page"; errors.Is(err, errOverflow) {
					class = "page_overflow"
				}
				return delivery.New(delivery.Transient, class, err)
			}
			return nil
		})
	switch {
	case ferr != nil:
	case err != nil && ctx.Err() != nil:
		ferr = &Error{Class: "canceled", Err: ctx.Err()}
	case err != nil:
		ferr = &Error{Class: class, Status: http.StatusOK, Head: head(page.Body), Err: err}
	}
	if ferr != nil {
		ferr.At, ferr.Attempts = req.start, total
		return Read{}, false, ferr
	}
	r.pager.advance(req, len(page.Records))
	return Read{Records: page.Records, At: req.start, Attempts: total, Checked: page.Checked}, true, nil
}

// AsError returns err as a source error: a *Error it wraps, or one of class other around it.
func AsError(err error, other string) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Class: other, Err: err}
}
