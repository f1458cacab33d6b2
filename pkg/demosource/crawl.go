package demosource

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// style is how a page says where the next one is.
type style int

const (
	// styleOffset: the client computes the next offset or page; the body has the total.
	styleOffset style = iota
	// styleCursor: {"data": [...], "next_cursor": "…" or null, "has_more": bool}; ?cursor= asks.
	styleCursor
	// styleNext: {"data": [...], "links": {"next": "/next/…?from=…&limit=…" or null}}.
	styleNext
	// styleLink: the body is the array; a Link header has rel="next" (absent at the end).
	styleLink
)

// serveCrawl answers the crawl endpoints. The first page is asked for with limit alone; the next
// ones with the cursor (?cursor=) or the URL the previous page gave (?from=).
func (s *Server) serveCrawl(st style) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.stats.requests.Add(1)
		q := r.URL.Query()
		limit, err := intParam(q, "limit", 1, int64(s.cfg.MaxLimit))
		if err != nil {
			s.writeError(w, http.StatusBadRequest, err.Error(), 0)
			return
		}
		param := "from"
		if st == styleCursor {
			param = "cursor"
		}
		lo, hi, err := s.window(q)
		if err != nil {
			s.writeError(w, http.StatusBadRequest, err.Error(), 0)
			return
		}
		offset := lo
		if c := q.Get(param); c != "" {
			if offset, err = offsetOf(c); err != nil {
				s.writeError(w, http.StatusBadRequest, err.Error(), 0)
				return
			}
		}
		s.serve(w, r, pageKey{offset: offset, limit: limit}, hi, st)
	}
}

// next returns the offset of the page after the one of key, whose records end at end, and whether
// there is one; CursorFault bends it.
func (s *Server) next(key pageKey, end, hi int64) (int64, bool) {
	if s.cfg.CursorFault != "" && key.offset >= s.cfg.CursorFaultAt {
		if s.cfg.CursorFault == "stuck" {
			return key.offset, true
		}
		return max(0, key.offset-key.limit), true
	}
	return end, end < hi
}

// window reads the bounds a request may set on the records, as a slice of them: ids in
// [id_from, id_to), or creation times in [created_from, created_to) (RFC 3339 or unix seconds;
// record i was created i seconds after 2020-01-01T00:00:00Z). It returns the records [lo, hi).
func (s *Server) window(q url.Values) (lo, hi int64, err error) {
	lo, hi = 0, s.cfg.Records
	bound := func(name string, parse func(string) (int64, error), set func(int64)) {
		if v := q.Get(name); v != "" && err == nil {
			n, perr := parse(v)
			if perr != nil {
				err = fmt.Errorf("%s: %v", name, perr)
				return
			}
			set(min(max(n, 0), s.cfg.Records))
		}
	}
	id := func(v string) (int64, error) { return strconv.ParseInt(v, 10, 64) }
	bound("id_from", id, func(n int64) { lo = max(lo, n) })
	bound("id_to", id, func(n int64) { hi = min(hi, n) })
	bound("created_from", createdIndex, func(n int64) { lo = max(lo, n) })
	bound("created_to", createdIndex, func(n int64) { hi = min(hi, n) })
	return lo, max(lo, hi), err
}

// createdIndex is the first record created at or after the time v.
func createdIndex(v string) (int64, error) {
	var t time.Time
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		t = time.Unix(secs, 0)
	} else if t, err = time.Parse(time.RFC3339, v); err != nil {
		return 0, errors.New("want an RFC 3339 time or unix seconds")
	}
	d := t.Sub(time.Unix(epoch, 0))
	n := int64(d / time.Second)
	if d%time.Second > 0 {
		n++
	}
	return n, nil
}

// cursorOf is the opaque cursor of the page at offset.
func cursorOf(offset int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("o:" + strconv.FormatInt(offset, 10)))
}

var errBadCursor = errors.New("the cursor is not one this source gave")

// offsetOf reads a cursor back.
func offsetOf(c string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, errBadCursor
	}
	digits, ok := strings.CutPrefix(string(b), "o:")
	if !ok {
		return 0, errBadCursor
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n < 0 {
		return 0, errBadCursor
	}
	return n, nil
}

// crawlURL is the URL of the page at offset on the endpoint of r: relative (a path and a query),
// or absolute with r's host.
func crawlURL(r *http.Request, offset, limit int64, absolute bool) string {
	q := r.URL.Query() // the window's bounds go on
	q.Set("from", cursorOf(offset))
	q.Set("limit", strconv.FormatInt(limit, 10))
	rel := fmt.Sprintf("%s?%s", r.URL.Path, q.Encode())
	if !absolute {
		return rel
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + rel
}
