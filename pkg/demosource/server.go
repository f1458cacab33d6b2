package demosource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Server is the demo source's HTTP API. It is safe for concurrent use. It remembers each page it
// was asked for (attempts and Retry-After, a few dozen bytes a page) for as long as it runs.
type Server struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	reg     prometheus.Registerer
	metrics *metrics
	faults  *faults
	tokens  tokens
	stats   counters
	bufs    sync.Pool
	mux     *http.ServeMux
}

// Option changes how New builds a Server.
type Option func(*Server)

// WithClock makes the server read the time from now, which decides whether a request came before
// the Retry-After it was sent. Tests pass a clock they move by hand.
func WithClock(now func() time.Time) Option {
	return func(s *Server) { s.now = now }
}

// WithRegisterer registers the demosource_ metrics with reg.
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(s *Server) { s.reg = reg }
}

// New returns a server for cfg after validating it. A nil log discards.
func New(cfg Config, log *slog.Logger, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("demo source configuration:\n%w", err)
	}
	ranges, _ := parseRanges(cfg.FailRanges) // Validate parsed them
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:    cfg,
		log:    log,
		now:    time.Now,
		faults: &faults{cfg: cfg, ranges: ranges, pages: make(map[pageKey]*pageState)},
		mux:    http.NewServeMux(),
	}
	for _, o := range opts {
		o(s)
	}
	if s.reg != nil {
		s.metrics = newMetrics(s.reg)
	}
	s.tokens.expiry = map[string]time.Time{}
	s.mux.HandleFunc("POST /oauth/token", s.serveToken)
	s.mux.HandleFunc("GET /api/{name}", s.serveAPI)
	s.mux.HandleFunc("GET /cursor/{name}", s.serveCrawl(styleCursor))
	s.mux.HandleFunc("GET /next/{name}", s.serveCrawl(styleNext))
	s.mux.HandleFunc("GET /link/{name}", s.serveCrawl(styleLink))
	s.mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Stats())
	})
	s.mux.HandleFunc("POST /stats/reset", func(w http.ResponseWriter, _ *http.Request) {
		s.stats.reset()
		w.WriteHeader(http.StatusNoContent)
	})
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	return s, nil
}

// Handler returns the routes: GET /api/{name} (any name) pages through the records with offset and
// limit or page and limit; GET /cursor/{name}, /next/{name} and /link/{name} crawl them with a
// cursor in the body, a next URL in the body, or a Link header (see serveCrawl); GET /stats,
// POST /stats/reset and GET /healthz.
func (s *Server) Handler() http.Handler { return s.mux }

// Stats returns what the server counted since it started or was last reset.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

// serveAPI answers one page request, or the fault it draws.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	s.stats.requests.Add(1)
	key, err := s.parsePage(r.URL.Query())
	if err != nil {
		s.writeError(w, http.StatusBadRequest, err.Error(), 0)
		return
	}
	lo, hi, err := s.window(r.URL.Query())
	if err != nil {
		s.writeError(w, http.StatusBadRequest, err.Error(), 0)
		return
	}
	key.offset += lo // offsets count from the window's first record
	s.serve(w, r, key, hi, styleOffset)
}

// serve answers a request for the page of key in style, or the fault it draws.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, key pageKey, hi int64, st style) {
	ctx := r.Context()
	if !s.authorized(r) {
		s.stats.unauthorized.Add(1)
		s.writeError(w, http.StatusUnauthorized, "missing, wrong or expired credentials", 0)
		return
	}
	if !sleep(ctx, s.cfg.PageLatency) {
		return
	}
	start, end := s.span(key, hi)
	f := s.faults.decide(key, end, s.now())
	if f.kind != faultNone || f.slow || f.truncated {
		s.log.LogAttrs(ctx, slog.LevelDebug, "fault injected", slog.String("fault", faultNames[f.kind]),
			slog.Int("status", f.status), slog.Bool("slow", f.slow), slog.Bool("truncated", f.truncated),
			slog.Int64("offset", key.offset), slog.Int64("limit", key.limit))
	}
	switch f.kind {
	case faultEarly:
		s.stats.early.Add(1)
		s.writeError(w, f.status, "requested again before Retry-After", f.retryAfter)
		return
	case faultFailRange:
		s.writeError(w, f.status, "the page holds records in a failing range", 0)
		return
	case fault429:
		s.writeError(w, f.status, "rate limited", f.retryAfter)
		return
	case fault5xx:
		s.writeError(w, f.status, http.StatusText(f.status), f.retryAfter)
		return
	case faultNone:
	}
	if f.slow {
		s.stats.slow.Add(1)
		if !sleep(ctx, s.cfg.SlowDelay) {
			return
		}
	}
	s.writePage(w, r, key, start, end, hi, f.truncated, st)
}

var faultNames = [...]string{faultNone: "none", faultEarly: "early", faultFailRange: "fail_range",
	fault429: "429", fault5xx: "5xx"}

// parsePage reads offset and limit, or page and limit, into a page key.
func (s *Server) parsePage(q url.Values) (pageKey, error) {
	limit, err := intParam(q, "limit", 1, int64(s.cfg.MaxLimit))
	if err != nil {
		return pageKey{}, err
	}
	hasOffset, hasPage := q.Has("offset"), q.Has("page")
	switch {
	case hasOffset && hasPage:
		return pageKey{}, errors.New("give offset or page, not both")
	case hasOffset:
		offset, err := intParam(q, "offset", 0, math.MaxInt64)
		return pageKey{offset: offset, limit: limit}, err
	case hasPage:
		page, err := intParam(q, "page", 1, math.MaxInt64/limit)
		return pageKey{offset: (page - 1) * limit, limit: limit}, err
	default:
		return pageKey{}, errors.New("offset or page is required")
	}
}

func intParam(q url.Values, name string, lo, hi int64) (int64, error) {
	s := q.Get(name)
	if s == "" {
		return 0, fmt.Errorf("%s is required", name)
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s must be an integer, got %q", name, s)
	}
	if v < lo || v > hi {
		return 0, fmt.Errorf("%s must be between %d and %d, got %d", name, lo, hi, v)
	}
	return v, nil
}

// span returns the records [start, end) that the page holds, below hi; start == end past the last.
func (s *Server) span(key pageKey, hi int64) (start, end int64) {
	if key.offset >= hi {
		return key.offset, key.offset
	}
	return key.offset, key.offset + min(key.limit, hi-key.offset)
}

// writePage builds the whole body first, for its Content-Length, then writes it, or half of it
// when truncated.
func (s *Server) writePage(w http.ResponseWriter, r *http.Request, key pageKey, start, end, hi int64, truncated bool, st style) {
	n := end - start
	bp := s.buffer(256 + int(n)*(max(s.cfg.RecordSize, maxUnpadded)+1))
	defer s.bufs.Put(bp)
	buf := (*bp)[:0]
	if st != styleLink {
		buf = append(buf, `{"data":`...)
	}
	buf = append(buf, '[')
	for i := start; i < end; i++ {
		if i > start {
			buf = append(buf, ',')
		}
		k := kindValid
		if IsMalformed(i, s.cfg.MalformedEvery) {
			k = malformedKind(i)
		}
		buf = appendRecord(buf, i, s.cfg.RecordSize, k)
	}
	buf = append(buf, ']')
	next, more := s.next(key, end, hi)
	switch st {
	case styleOffset:
		buf = append(buf, `,"total":`...)
		buf = strconv.AppendInt(buf, s.cfg.Records, 10) // of the whole source, windowed or not
		buf = append(buf, `,"offset":`...)
		buf = strconv.AppendInt(buf, key.offset, 10)
		buf = append(buf, `,"limit":`...)
		buf = strconv.AppendInt(buf, key.limit, 10)
		buf = append(buf, '}')
	case styleCursor:
		buf = append(buf, `,"next_cursor":`...)
		if more {
			buf = strconv.AppendQuote(buf, cursorOf(next))
		} else {
			buf = append(buf, "null"...)
		}
		buf = append(buf, `,"has_more":`...)
		buf = strconv.AppendBool(buf, more)
		buf = append(buf, '}')
	case styleNext:
		buf = append(buf, `,"links":{"next":`...)
		if more {
			buf = strconv.AppendQuote(buf, crawlURL(r, next, key.limit, false))
		} else {
			buf = append(buf, "null"...)
		}
		buf = append(buf, "}}"...)
	case styleLink:
		if more {
			w.Header().Set("Link", fmt.Sprintf(`<%s>; rel="next", <%s>; rel="first"`, crawlURL(r, next, key.limit, true), crawlURL(r, 0, key.limit, true)))
		}
	}
	*bp = buf

	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(buf)))
	s.countStatus(http.StatusOK)
	w.WriteHeader(http.StatusOK)
	if truncated {
		s.stats.truncated.Add(1)
		_, _ = w.Write(buf[:len(buf)/2])
		_ = http.NewResponseController(w).Flush()
		// The server closes the connection without logging, and the client, promised
		// Content-Length bytes, reads an unexpected EOF.
		panic(http.ErrAbortHandler)
	}
	if _, err := w.Write(buf); err != nil {
		return // the client went away; it retries the page
	}
	s.stats.pages.Add(1)
	s.stats.records.Add(n)
	if s.faults.served(key) {
		s.stats.pagesAgain.Add(1)
	}
	if s.metrics != nil {
		s.metrics.records.Add(float64(n))
	}
}

// maxUnpadded bounds the size of a record without its pad, for sizing buffers.
const maxUnpadded = 160

func (s *Server) buffer(size int) *[]byte {
	if bp, ok := s.bufs.Get().(*[]byte); ok && cap(*bp) >= size {
		return bp
	}
	b := make([]byte, 0, size)
	return &b
}

func (s *Server) writeError(w http.ResponseWriter, status int, msg string, retryAfter time.Duration) {
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(retryAfterSeconds(retryAfter), 10))
	}
	s.countStatus(status)
	writeJSON(w, status, map[string]string{"error": msg})
}

func (s *Server) countStatus(status int) {
	s.stats.byStatus[status].Add(1)
	if s.metrics != nil {
		s.metrics.requests.WithLabelValues(strconv.Itoa(status)).Inc()
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// sleep waits d, or less when ctx ends first; it reports whether the whole d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
