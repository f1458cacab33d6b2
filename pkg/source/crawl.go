package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/sluicedata/sluice/pkg/delivery"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// maxSeen is how many positions before a page its task remembers: a crawl that comes back to one
// of them goes round in circles. A longer loop is stopped by max_pages, not caught.
const maxSeen = 64

// crawlReader reads one page of a crawl (cursor, next URL, Link header) and says where the next
// one is. A crawl hands on one page per task so that a member that dies mid-crawl costs one page.
type crawlReader struct {
	h     *httpSource
	creds *credentials
	pol   Policy
	crawl *sluicev1.Crawl
	chain string
	query map[string]string
	read  bool
	// next is the position of the next page, set once the page is read and the crawl goes on.
	next    string
	records int
}

// errStuck is a crawl whose next position is one it was at before.
var errStuck = errors.New("the source gave a cursor or URL the crawl was at before")

func (r *crawlReader) Key(record json.RawMessage) (string, string) {
	return RecordKey(record, r.h.src.Key)
}

// Next reads the crawl's page. A next position seen before is fetched again under the source's
// retries and then fails with class stuck_cursor, never spun on.
func (r *crawlReader) Next(ctx context.Context) (Read, bool, error) {
	if r.read {
		return Read{}, false, nil
	}
	r.read = true
	c := r.crawl
	u, err := r.url()
	if err != nil {
		return Read{}, false, &Error{Class: "bad_next_url", At: c.Page, Err: err}
	}
	var (
		page  Page
		ferr  *Error
		total int
		next  string
		more  bool
		// overflow is set while the page holds more records than it asked for.
		overflow bool
	)
	src, pol := r.h.src, r.pol
	_, err = r.h.env.Fetcher.Retry.Do(ctx, "fetch", delivery.Policy{Backoff: pol.Backoff, MaxAttempts: pol.MaxRetries + 1, Deadline: pol.Deadline},
		func(int) error {
			var attempts int
			page, attempts, ferr = r.h.fetch(ctx, r.creds, u, src.RecordsPath, "", pol)
			total += attempts
			if ferr != nil {
				return delivery.New(delivery.Data, ferr.Class, ferr) // FetchPage spent the retries
			}
			var told bool
			if next, more, told, err = r.after(page, u); err != nil {
				ferr = &Error{Class: "bad_next_url", Status: http.StatusOK, Head: head(page.Body), Err: err}
				return delivery.New(delivery.Data, ferr.Class, ferr)
			}
			if size := uint64(src.GetPagination().GetPageSize()); src.GetPagination().GetLimitParam() != "" && size > 0 && uint64(len(page.Records)) > size {
				overflow = true
				return delivery.New(delivery.Transient, "page_overflow", fmt.Errorf("%w: page %d had %d records, and asked for %d", errOverflow, c.Page, len(page.Records), size))
			}
			overflow = false
			more = more && r.goesOn(len(page.Records), told)
			if more && r.seen(next) {
				return delivery.New(delivery.Transient, "stuck_cursor", fmt.Errorf("%w (page %d)", errStuck, c.Page))
			}
			return nil
		})
	switch {
	case ferr != nil:
	case err != nil && ctx.Err() != nil:
		ferr = &Error{Class: "canceled", Err: ctx.Err()}
	case err != nil && overflow:
		ferr = &Error{Class: "page_overflow", Status: http.StatusOK, Head: head(page.Body), Err: err}
	case err != nil:
		ferr = &Error{Class: "stuck_cursor", Status: http.StatusOK, Head: head(page.Body), Err: err}
	}
	if ferr != nil {
		ferr.At, ferr.Attempts = c.Page, total
		return Read{}, false, ferr
	}
	records := page.Records
	if limit := src.GetMaxRecords(); limit > 0 && c.Records+uint64(len(records)) >= limit {
		records = records[:limit-min(limit, c.Records)]
	}
	if more {
		r.next = next
	}
	r.records = len(records)
	return Read{Records: records, At: c.Page, Attempts: total}, true, nil
}

func (r *crawlReader) More() bool { return !r.read }

// goesOn reports whether the crawl goes on past a page of n records whose body said where the
// next one is: the empty page ends it (unless has_more_path said true), and so do max_records and
// max_pages. It is decided before a position seen again counts as going round in circles: the last
// page of many APIs repeats its cursor.
func (r *crawlReader) goesOn(n int, told bool) bool {
	c, src := r.crawl, r.h.src
	switch {
	case n == 0 && !told:
		return false
	case src.GetMaxRecords() > 0 && c.Records+uint64(n) >= src.GetMaxRecords():
		return false
	case src.GetPagination().GetMaxPages() > 0 && c.Page+1 >= src.GetPagination().GetMaxPages():
		return false
	}
	return true
}

// Then is the task of the crawl's next page, once this one is read and the crawl goes on.
func (r *crawlReader) Then() *sluicev1.Task {
	if r.next == "" {
		return nil
	}
	c := r.crawl
	seen := append(append([]uint64(nil), c.Seen...), positionHash(c.Position))
	if len(seen) > maxSeen {
		seen = seen[len(seen)-maxSeen:]
	}
	return &sluicev1.Task{TaskId: fmt.Sprintf("%s-p%08d", r.chain, c.Page+1),
		Slice: &sluicev1.Task_Crawl{Crawl: &sluicev1.Crawl{Position: r.next, Page: c.Page + 1,
			Records: c.Records + uint64(r.records), Seen: seen, Chain: r.chain}}}
}

// seen reports whether the crawl was at position before (this page included).
func (r *crawlReader) seen(position string) bool {
	if position == r.crawl.Position {
		return true
	}
	h := positionHash(position)
	for _, s := range r.crawl.Seen {
		if s == h {
			return true
		}
	}
	return false
}

func positionHash(position string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(position))
	return h.Sum64()
}

// url is the request of the page: the source URL with the cursor, or the URL the last page gave.
func (r *crawlReader) url() (string, error) {
	src, pg, pos := r.h.src, r.h.src.GetPagination(), r.crawl.Position
	if pos != "" && pg.GetType() != sluicev1.Pagination_TYPE_CURSOR {
		return pos, nil // checked against the source's host when it was read
	}
	u, err := url.Parse(src.Url)
	if err != nil {
		return "", errors.New("source url does not parse")
	}
	q := u.Query()
	if pg.GetLimitParam() != "" {
		q.Set(pg.GetLimitParam(), strconv.FormatUint(r.h.pageSize(), 10))
	}
	if pos != "" {
		q.Set(pg.GetCursorParam(), pos)
	}
	for k, v := range r.query {
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// after reads where the page at u says the next one is, whether there is one, and whether
// has_more_path said so in as many words.
func (r *crawlReader) after(page Page, u string) (next string, more, told bool, err error) {
	pg := r.h.src.GetPagination()
	if path := pg.GetHasMorePath(); path != "" {
		raw, reason := find(page.Body, path)
		if reason == "" && bytes.Equal(raw, []byte("false")) {
			return "", false, false, nil
		}
		told = reason == "" && bytes.Equal(raw, []byte("true"))
	}
	switch pg.GetType() {
	case sluicev1.Pagination_TYPE_CURSOR:
		next, more = scalar(page.Body, pg.GetCursorPath())
		return next, more, told, nil
	case sluicev1.Pagination_TYPE_NEXT_URL:
		next, more = scalar(page.Body, pg.GetNextUrlPath())
	default: // TYPE_LINK_HEADER
		next, more = linkNext(page.Header.Values("Link"))
	}
	if !more {
		return "", false, told, nil
	}
	abs, err := r.sameHost(u, next)
	if err != nil {
		return "", false, told, err
	}
	// The position travels in the next page's task: a key the source echoes in its links stays out.
	return r.creds.withoutQuery(abs), true, told, nil
}

// sameHost resolves next against the page's URL and refuses another host: the source's headers,
// its secrets among them, go only where the job said.
func (r *crawlReader) sameHost(page, next string) (string, error) {
	base, err := url.Parse(page)
	if err != nil {
		return "", errors.New("page url does not parse")
	}
	ref, err := url.Parse(next)
	if err != nil {
		return "", errors.New("the next page's URL does not parse")
	}
	abs := base.ResolveReference(ref)
	src, _ := url.Parse(r.h.src.Url)
	if abs.Scheme != src.Scheme || abs.Host != src.Host {
		return "", errors.New("the next page's URL leaves the source's host; sluice follows links on the same host only")
	}
	return abs.String(), nil
}

// scalar is the string or number at path in a body; false when it is missing, null or empty.
func scalar(body []byte, path string) (string, bool) {
	raw, reason := find(body, path)
	if reason != "" || len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", false
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil || s == "" {
			return "", false
		}
		return s, true
	}
	if raw[0] == '{' || raw[0] == '[' || bytes.Equal(raw, []byte("true")) || bytes.Equal(raw, []byte("false")) {
		return "", false
	}
	return string(raw), true // a number, as the source wrote it
}

// linkNext finds the target of rel="next" in Link header values (RFC 8288): links separated by
// commas, each <target> with parameters; rel may list several relation types.
func linkNext(values []string) (string, bool) {
	for _, v := range values {
		for v != "" {
			v = strings.TrimLeft(v, " \t,")
			if !strings.HasPrefix(v, "<") {
				return "", false
			}
			end := strings.IndexByte(v, '>')
			if end < 0 {
				return "", false
			}
			target := v[1:end]
			v = v[end+1:]
			params := v
			if i := nextLink(v); i >= 0 {
				params, v = v[:i], v[i:]
			} else {
				v = ""
			}
			for _, p := range strings.Split(params, ";") {
				name, value, ok := strings.Cut(strings.TrimSpace(p), "=")
				if !ok || !strings.EqualFold(strings.TrimSpace(name), "rel") {
					continue
				}
				for _, rel := range strings.Fields(strings.Trim(strings.TrimSpace(value), `"`)) {
					if strings.EqualFold(rel, "next") {
						return target, true
					}
				}
			}
		}
	}
	return "", false
}

// nextLink is the index of the comma that starts the next link in v, outside quoted strings.
func nextLink(v string) int {
	quoted := false
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '"':
			quoted = !quoted
		case '\\':
			i++
		case ',':
			if !quoted {
				return i
			}
		}
	}
	return -1
}
