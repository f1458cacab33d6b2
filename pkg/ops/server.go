package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition, such as "kafka" or "clickhouse". Its function gets a context
// with the server's check timeout and returns nil when the dependency can be used now.
type Check struct {
	Name string
	Func func(ctx context.Context) error
}

// Server is the operations HTTP server of a process. Services may add their own routes with Handle
// (the planner serves its API on the same listener).
type Server struct {
	addr         string
	log          *slog.Logger
	mux          *http.ServeMux
	checks       []Check
	checkTimeout time.Duration
	checkFailed  *prometheus.CounterVec

	timeouts Timeouts

	mu       sync.Mutex
	listener net.Listener
}

// Timeouts bound what one client may hold of a server: the time to send its request, headers and
// body (Read), to take the answer (Write) and to keep an idle connection open (Idle).
type Timeouts struct {
	Read  time.Duration `env:"READ_TIMEOUT, default=30s"`
	Write time.Duration `env:"WRITE_TIMEOUT, default=2m"`
	Idle  time.Duration `env:"IDLE_TIMEOUT, default=2m"`
}

// DefaultTimeouts are the defaults of Timeouts' variables.
var DefaultTimeouts = Timeouts{Read: 30 * time.Second, Write: 2 * time.Minute, Idle: 2 * time.Minute}

// Body limits: a request without a body in its method's meaning (GET, HEAD, DELETE) may send at
// most bodyLimitNone bytes, any other at most BodyLimit; a route may read less.
const (
	BodyLimit     = 1 << 20
	bodyLimitNone = 4 << 10
	maxHeaderSize = 64 << 10
)

// SetTimeouts replaces DefaultTimeouts; zero fields keep their default.
func (s *Server) SetTimeouts(t Timeouts) {
	if t.Read > 0 {
		s.timeouts.Read = t.Read
	}
	if t.Write > 0 {
		s.timeouts.Write = t.Write
	}
	if t.Idle > 0 {
		s.timeouts.Idle = t.Idle
	}
}

// NewServer returns a server for addr (host:port; ":0" picks a free port) that exposes reg.
func NewServer(addr string, reg *prometheus.Registry, log *slog.Logger, checks ...Check) *Server {
	s := &Server{
		addr:         addr,
		log:          log,
		mux:          http.NewServeMux(),
		checks:       checks,
		checkTimeout: 2 * time.Second,
		timeouts:     DefaultTimeouts,
		checkFailed: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "ops_readiness_check_failures_total",
			Help: "Readiness checks that failed, by check.",
		}, []string{"check"}),
	}
	for _, c := range checks {
		s.checkFailed.WithLabelValues(c.Name)
	}
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:          reg,
		EnableOpenMetrics: true,
	}))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.ready)
	return s
}

// Handle adds a route, in http.ServeMux pattern syntax.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// ServeProfiles adds Go's runtime profiles at /debug/pprof/ (go tool pprof reads them).
func (s *Server) ServeProfiles() {
	s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	s.mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

// Handler returns the server's routes, for tests and for embedding.
func (s *Server) Handler() http.Handler { return limitBodies(s.mux) }

// Addr returns the address the server listens on once Run has bound it, else the configured one.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener != nil {
		return s.listener.Addr().String()
	}
	return s.addr
}

// Listen binds the address, so that a caller knows the port before Serve runs.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.addr, err)
	}
	s.mu.Lock()
	s.listener = ln
	s.mu.Unlock()
	return nil
}

// Run serves until ctx ends, then shuts down, giving open requests up to five seconds.
// It binds the address first if Listen was not called.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	ln := s.listener
	s.mu.Unlock()
	if ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
		ln = s.listener
	}
	srv := &http.Server{
		Handler:           limitBodies(s.mux),
		ReadHeaderTimeout: min(10*time.Second, s.timeouts.Read),
		ReadTimeout:       s.timeouts.Read,
		WriteTimeout:      s.timeouts.Write,
		IdleTimeout:       s.timeouts.Idle,
		MaxHeaderBytes:    maxHeaderSize,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("ops server listening", "addr", ln.Addr().String())

	select {
	case err := <-errc:
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shut down http: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", err)
	}
	return nil
}

// limitBodies caps every request body: a client cannot make a handler read without bound.
func limitBodies(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := int64(BodyLimit)
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodDelete, http.MethodOptions:
			limit = bodyLimitNone
		}
		if r.ContentLength > limit {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("request body is larger than %d bytes", limit)})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		h.ServeHTTP(w, r)
	})
}

// ready runs every check concurrently and answers 200 only when all pass. The body names each
// check's result; failures carry the check's error text, which must hold no secrets.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.checkTimeout)
	defer cancel()

	results := make(map[string]string, len(s.checks))
	var mu sync.Mutex
	var wg sync.WaitGroup
	failed := false
	for _, c := range s.checks {
		wg.Go(func() {
			err := c.Func(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = true
				results[c.Name] = err.Error()
				s.checkFailed.WithLabelValues(c.Name).Inc()
				return
			}
			results[c.Name] = "ok"
		})
	}
	wg.Wait()

	status := http.StatusOK
	if failed {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]any{"ready": !failed, "checks": results})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
