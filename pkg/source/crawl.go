package source

import (
	"bytes"
	"context"
	"encoding/binary"
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
// of them goes round in circles (stuck_cursor), caught at once. A longer round, or one under new
// cursors, is caught by the pages' fingerprints (crawl_loop; see loops).
const maxSeen = 64

// DefaultMaxPages bounds a crawl whose spec gives no max_pages: a source whose cursor never ends
// (a bug, or a feed that grows as fast as it is read) must not keep a job running for ever. A
// bound the spec sets is an end the job asked for, and the crawl ends there quietly; this one is
// not, and the task of the page past it fails with class max_pages: the job says it was cut.
const DefaultMaxPages = 100_000

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
	// anchor and anchorPage are what the next page's task carries for the loop check.
	anchor     uint64
	anchorPage uint64
}

// Why a crawl stops before its source ends it.
var (
	// errStuck is a crawl whose next position is one it was at before.
	errStuck = errors.New("the source gave a cursor or URL the crawl was at before")
	// errLoop is a crawl whose page holds the records of an earlier one again.
	errLoop = errors.New("the page repeats the records of an earlier page of the crawl under another cursor or URL: the crawl goes round in circles")
	// errMaxPages is a crawl that reached its bound of pages without the source ending it.
	errMaxPages = errors.New("the crawl reached its bound of pages and the source still had a next page")
)

func (r *crawlReader) Key(record json.RawMessage) (string, string) {
	return RecordKey(record, r.h.src.Key)
}

// Next reads the crawl's page. A next position seen before is fetched again under the source's
// retries and then fails with class stuck_cursor, and a page whose records repeat an earlier
// page's with class crawl_loop, never spun on. A page past the crawl's bound fails with class
// max_pages without a request.
func (r *crawlReader) Next(ctx context.Context) (Read, bool, error) {
	if r.read {
		return Read{}, false, nil
	}
	r.read = true
	c := r.crawl
	if bound, _ := r.bound(); c.Page >= bound {
		return Read{}, false, &Error{Class: "max_pages", At: c.Page,
			Err: fmt.Errorf("%w (%d pages; set source.pagination.max_pages to read further, or to end the crawl there as asked)", errMaxPages, bound)}
	}
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
		// circle is the class of a crawl found going round in circles.
		circle string
		fp     uint64
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
			overflow, circle = false, ""
			more = more && r.goesOn(len(page.Records), told)
			fp = fingerprint(page.Records)
			switch {
			case more && r.seen(next):
				circle = "stuck_cursor"
				return delivery.New(delivery.Transient, circle, fmt.Errorf("%w (page %d)", errStuck, c.Page))
			case more && r.loops(fp):
				circle = "crawl_loop"
				return delivery.New(delivery.Transient, circle, fmt.Errorf("%w (page %d, as page %d)", errLoop, c.Page, c.AnchorPage))
			}
			return nil
		})
	switch {
	case ferr != nil:
	case err != nil && ctx.Err() != nil:
		ferr = &Error{Class: "canceled", Err: ctx.Err()}
	case err != nil && overflow:
		ferr = &Error{Class: "page_overflow", Status: http.StatusOK, Head: head(page.Body), Err: err}
	case err != nil && circle != "":
		ferr = &Error{Class: circle, Status: http.StatusOK, Head: head(page.Body), Err: err}
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
	r.anchor, r.anchorPage = r.moveAnchor(fp)
	r.records = len(records)
	return Read{Records: records, At: c.Page, Attempts: total, Checked: page.Checked}, true, nil
}

func (r *crawlReader) More() bool { return !r.read }

// goesOn reports whether the crawl goes on past a page of n records whose body said where the
// next one is: the empty page ends it (unless has_more_path said true), and so do max_records and
// the spec's max_pages. It is decided before a position seen again counts as going round in
// circles: the last page of many APIs repeats its cursor.
func (r *crawlReader) goesOn(n int, told bool) bool {
	c, src := r.crawl, r.h.src
	bound, asked := r.bound()
	switch {
	case n == 0 && !told:
		return false
	case src.GetMaxRecords() > 0 && c.Records+uint64(n) >= src.GetMaxRecords():
		return false
	case asked && c.Page+1 >= bound:
		return false
	}
	return true
}

// bound is the most pages the crawl reads, and whether the spec asked for it (max_pages) rather
// than DefaultMaxPages applies. One place decides both the quiet end at a bound the spec set and
// the failure past the default one.
func (r *crawlReader) bound() (pages uint64, asked bool) {
	if n := r.h.src.GetPagination().GetMaxPages(); n > 0 {
		return n, true
	}
	return DefaultMaxPages, false
}

// loops reports whether the page, of fingerprint fp, holds the records of the crawl's anchor page
// again: the crawl goes round in circles, whatever cursors or URLs the source hands out.
func (r *crawlReader) loops(fp uint64) bool {
	return fp != 0 && fp == r.crawl.Anchor
}

// moveAnchor is the anchor the next page's task carries: Brent's cycle detection, which holds
// one earlier page and moves it to the current page once the distance since it reaches its own
// sequence (pages 0, 1, 2, 4, 8, …). A round of λ pages entered at page μ is caught by page
// 2·max(μ, λ)+λ or so, in a task that stays 16 bytes larger whatever the crawl's length. A window
// of recent fingerprints misses rounds longer than itself, and a Bloom filter large enough for
// 100,000 pages would make every task many kilobytes and still give false loops; Brent gives
// none but the 2⁻⁶⁴ of a fingerprint's collision. Empty pages have no fingerprint: a source that
// scans for records may answer many of them, each under a new cursor, without going round.
func (r *crawlReader) moveAnchor(fp uint64) (uint64, uint64) {
	c := r.crawl
	if fp == 0 || (c.Anchor != 0 && c.Page-c.AnchorPage < max(c.AnchorPage, 1)) {
		return c.Anchor, c.AnchorPage
	}
	return fp, c.Page
}

// fingerprint hashes a page's records as the source wrote them, each with its length; 0 for an
// empty page. The bytes rather than the keys: a feed may hand out the same key again with new
// values (an update), which is no loop, while records that are byte for byte the same are pages
// read before. FNV-1a, because the fingerprint travels to other processes: it must not be seeded.
func fingerprint(records []json.RawMessage) uint64 {
	if len(records) == 0 {
		return 0
	}
	h := fnv.New64a()
	var n [8]byte
	for _, rec := range records {
		binary.LittleEndian.PutUint64(n[:], uint64(len(rec)))
		_, _ = h.Write(n[:])
		_, _ = h.Write(rec)
	}
	return max(h.Sum64(), 1)
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
			Records: c.Records + uint64(r.records), Seen: seen, Chain: r.chain, Anchor: r.anchor, AnchorPage: r.anchorPage}}}
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
