package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/logging"
	"github.com/sluicedata/sluice/pkg/ops"
)

// Config is the part of the configuration every service has. Each service embeds it and adds its
// own variables, among them SLUICE_HTTP_ADDR, whose default differs per service.
type Config struct {
	// ShutdownTimeout bounds the drain after SIGTERM; keep it under the orchestrator's grace period.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT, default=20s"`
	// StallTimeout is how long a consumer-group member may own lagging partitions without progress
	// before /readyz fails and says what it waits for.
	StallTimeout time.Duration `env:"STALL_TIMEOUT, default=3m"`
	// Pprof serves Go's profiles at /debug/pprof/ on the ops port. Off by default: a profile
	// shows what the process is doing to anyone who reaches the port.
	Pprof bool `env:"PPROF, default=false"`
	// HTTP bounds what one client may hold of the service's HTTP server (SLUICE_HTTP_READ_TIMEOUT,
	// _WRITE_TIMEOUT, _IDLE_TIMEOUT).
	HTTP  ops.Timeouts   `env:", prefix=HTTP_"`
	Log   logging.Config `env:", prefix=LOG_"`
	Kafka kafka.Config   `env:", prefix=KAFKA_"`
}

// Validate reports every problem with the common configuration.
func (c Config) Validate() error {
	var p config.Problems
	if c.ShutdownTimeout <= 0 {
		p.Addf("SHUTDOWN_TIMEOUT", "must be positive, got %s", c.ShutdownTimeout)
	}
	if c.StallTimeout < 30*time.Second {
		p.Addf("STALL_TIMEOUT", "must be at least 30s (lag is measured every 10 s), got %s", c.StallTimeout)
	}
	for _, t := range []struct {
		name string
		d    time.Duration
	}{{"HTTP_READ_TIMEOUT", c.HTTP.Read}, {"HTTP_WRITE_TIMEOUT", c.HTTP.Write}, {"HTTP_IDLE_TIMEOUT", c.HTTP.Idle}} {
		if t.d <= 0 {
			p.Addf(t.name, "must be positive, got %s", t.d)
		}
	}
	p.Add(c.Log.Validate())
	p.Add(c.Kafka.Validate())
	return p.Err()
}

// Runtime is what a service has once it started: its logger, its registry and its Kafka client.
type Runtime struct {
	Name     string
	Log      *slog.Logger
	Registry *prometheus.Registry
	Kafka    *kgo.Client
	// Denials are the brokers' refusals of this client's rights, which fail readiness.
	Denials *kafka.Denials
	cfg     Config
}

// Start builds the logger and the registry, connects to Kafka with kopts added to the base client
// options, and creates the missing topics when configured to. The caller closes the runtime.
func Start(ctx context.Context, name string, stdout io.Writer, cfg Config, kopts ...kgo.Opt) (*Runtime, error) {
	log, err := logging.New(stdout, cfg.Log, name)
	if err != nil {
		return nil, err
	}
	reg := ops.NewRegistry()
	cl, err := kafka.NewClient(cfg.Kafka, "sluice-"+name, log, reg, kopts...)
	if err != nil {
		return nil, err
	}
	rt := &Runtime{Name: name, Log: log, Registry: reg, Kafka: cl, Denials: kafka.NewDenials(cfg.Kafka), cfg: cfg}
	// Credentials the brokers refuse stop the service now, with what to check; a broker that does
	// not answer yet is what readiness reports.
	pctx, cancel := context.WithTimeout(ctx, cfg.Kafka.DialTimeout+cfg.Kafka.RequestTimeout)
	refused := cfg.Kafka.Refusal(kafka.Ping(pctx, cl))
	cancel()
	if refused != nil {
		cl.Close()
		return nil, refused
	}
	if err := kafka.Bootstrap(ctx, cl, cfg.Kafka, log); err != nil {
		cl.Close()
		return nil, fmt.Errorf("bootstrap topics: %w", cfg.Kafka.Explain(err))
	}
	return rt, nil
}

// Part is one long-running piece of a service. It returns nil when ctx ends and it has drained.
type Part func(ctx context.Context) error

// Run serves the ops endpoints on httpAddr with a Kafka readiness check plus checks, and runs the
// parts until ctx ends or one of them fails. After ctx ends the parts get the configured shutdown
// timeout to drain. Run closes the Kafka client before it returns.
func (r *Runtime) Run(ctx context.Context, srv *ops.Server, parts ...Part) error {
	// CloseAllowingRebalance also releases a rebalance that a consumer blocked on poll holds.
	defer r.Kafka.CloseAllowingRebalance()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx) })
	for _, p := range parts {
		g.Go(func() error { return p(gctx) })
	}
	r.Log.Info("service started", "http", srv.Addr())

	done := make(chan error, 1)
	go func() { done <- g.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	r.Log.Info("shutting down", "timeout", r.cfg.ShutdownTimeout.String())
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		r.Log.Info("service stopped")
		return nil
	case <-time.After(r.cfg.ShutdownTimeout):
		return fmt.Errorf("shutdown took longer than %s", r.cfg.ShutdownTimeout)
	}
}

// NewServer returns the ops server of the runtime on addr, ready when Kafka answers and every one of
// checks passes.
func (r *Runtime) NewServer(addr string, checks ...ops.Check) *ops.Server {
	kafkaCheck := ops.Check{Name: "kafka", Func: func(ctx context.Context) error {
		if err := r.Denials.Ready(ctx); err != nil {
			return err
		}
		return kafka.Ping(ctx, r.Kafka)
	}}
	srv := ops.NewServer(addr, r.Registry, r.Log, append([]ops.Check{kafkaCheck}, checks...)...)
	srv.SetTimeouts(r.cfg.HTTP)
	if r.cfg.Pprof {
		srv.ServeProfiles()
	}
	return srv
}
