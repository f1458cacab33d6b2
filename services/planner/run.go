package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/sethvargo/go-envconfig"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/ops"
	"github.com/sluicedata/sluice/pkg/pipeline"
	"github.com/sluicedata/sluice/pkg/service"
	"github.com/sluicedata/sluice/pkg/source"
)

// run loads the configuration, follows the job events and serves the jobs API next to the ops
// endpoints until ctx ends.
func run(ctx context.Context, lookup envconfig.Lookuper, stdout io.Writer) error {
	var cfg Config
	if err := config.Load(ctx, lookup, &cfg); err != nil {
		return err
	}
	rt, err := service.Start(ctx, "planner", stdout, cfg.Config, append(termWriteOpts(),
		kgo.ConsumeTopics(cfg.Kafka.EventsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)...)
	if err != nil {
		return err
	}
	retry := delivery.NewRetrier(rt.Registry, rt.Log)
	states := func(ctx context.Context, fn func(*kgo.Record), live func()) error {
		cl, err := kafka.NewClient(cfg.Kafka, "sluice-planner-states", rt.Log, nil,
			kgo.ConsumeTopics(cfg.Kafka.JobsTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			return err
		}
		defer cl.Close()
		return tail(ctx, cl, cfg.Kafka.JobsTopic, rt.Log, fn, live)
	}
	bound, err := source.ParseSecretHosts(cfg.SecretHosts)
	if err != nil {
		return fmt.Errorf("SLUICE_SECRET_HOSTS: %w", err)
	}
	var auth *authorizer
	if cfg.Planner.Auth == "none" {
		rt.Log.Warn("the jobs API serves everyone who reaches it (SLUICE_PLANNER_AUTH=none)")
	} else {
		tokens, err := openTokens(cfg.Planner.TokensFile, rt.Log)
		if err != nil {
			rt.Kafka.Close()
			return err
		}
		auth = &authorizer{tokens: tokens}
	}
	egress, err := source.ParseEgress(cfg.SourceAllow)
	if err != nil { // Validate checked it
		return fmt.Errorf("SLUICE_SOURCE_ALLOW: %w", err)
	}
	rt.Log.Info("sources may reach "+egress.String(), "variable", "SLUICE_SOURCE_ALLOW")
	peers, err := parsePeers(cfg.Planner.Peers)
	if err != nil { // Validate checked it
		return fmt.Errorf("SLUICE_PLANNER_PEERS: %w", err)
	}
	rt.Log.Info("a follower forwards writes to "+peers.String(), "variable", "SLUICE_PLANNER_PEERS")
	secrets := source.Secrets{Env: os.LookupEnv, Dirs: cfg.SecretDirs, Hosts: bound}
	// Planning a postgres source asks its database for the key's extent: one query at a time.
	pools := &source.Pools{MaxConns: 2, Egress: egress}
	defer pools.Close()
	p := &Planner{
		retry:  retry,
		cfg:    cfg.Planner,
		states: states,
		cl:     rt.Kafka,
		topics: topics{tasks: cfg.Kafka.TasksTopic, events: cfg.Kafka.EventsTopic, jobs: cfg.Kafka.JobsTopic, schemas: cfg.Kafka.SchemasTopic},
		sources: source.Env{
			Fetcher: &source.Fetcher{
				Client:     egress.Client(),
				MaxBody:    cfg.Planner.FirstPageMaxBytes,
				MaxRecords: cfg.Planner.FirstPageMaxRecords,
				Metrics:    source.NewMetrics(rt.Registry, "planner"),
				Retry:      retry,
				Now:        time.Now,
			},
			Lookup:       secrets.Lookup,
			Allowed:      secrets.Allowed,
			Backoff:      pipeline.Backoff{Base: 200 * time.Millisecond, Max: 5 * time.Second},
			PageDeadline: time.Minute,
			Tokens:       &source.Tokens{Client: egress.Client(), Now: time.Now},
			Postgres:     pools,
		},
		jobs:         newJobs(),
		folded:       newFolded(),
		statesFolded: newFolded(),
		names:        newNames(),
		log:          rt.Log,
		backoff:      pipeline.Backoff{Base: 200 * time.Millisecond, Max: 5 * time.Second},
		now:          time.Now,
		auth:         auth,
		peers:        peers,
		submits:      make(chan struct{}, cfg.Planner.MaxConcurrentSubmits),
	}
	p.names.count(rt.Registry)
	p.jobs.count(rt.Registry)
	p.forgottenJobs = promauto.With(rt.Registry).NewCounter(prometheus.CounterOpts{Name: "planner_jobs_forgotten_total",
		Help: "Finished jobs the planner forgot past SLUICE_PLANNER_KEEP_FINISHED or SLUICE_PLANNER_KEEP_FINISHED_MAX."})
	rt.Registry.MustRegister(newJobsCollector(p.jobs))
	p.groups = kafka.NewGroupMonitor([]kafka.Watched{
		{Group: cfg.ExtractorGroup, Topic: cfg.Kafka.TasksTopic},
		{Group: cfg.LoaderGroup, Topic: cfg.Kafka.RawTopic},
	}, cfg.Planner.LagInterval)
	rt.Registry.MustRegister(p.groups)
	p.letters = newLetters(cfg.Planner.RecentDeadLetters)
	lettersCl, err := kafka.NewClient(cfg.Kafka, "sluice-planner-letters", rt.Log, nil,
		kgo.ConsumeTopics(cfg.Kafka.DLQTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		rt.Kafka.Close()
		return err
	}
	p.lease, err = newLease(cfg.Kafka, leaseConfig{Group: cfg.Planner.LeaseGroup, Topic: cfg.Kafka.LeaseTopic,
		Advertise: cfg.Planner.Advertise, Session: cfg.Planner.LeaseTimeout}, rt.Log, rt.Registry)
	if err != nil {
		lettersCl.Close()
		rt.Kafka.Close()
		return err
	}
	p.tables = newSinkTables(cfg.ClickHouse, rt.Log)
	srv := rt.NewServer(cfg.HTTPAddr, ops.Check{Name: "events", Func: p.ready}, ops.Check{Name: "lease", Func: p.lease.ready})
	p.routes(srv.Handle)
	return rt.Run(ctx, srv, p.Follow, p.Maintain, p.Lead, p.lease.Run,
		func(ctx context.Context) error { return p.groups.Run(ctx, rt.Kafka, rt.Log) },
		func(ctx context.Context) error { return p.letters.Run(ctx, lettersCl, rt.Log) })
}

// tail reads topic with cl, which consumes it from its start, calling fn for every record and live
// once it has read what the topic held when it began; it goes on until ctx ends. A fetch error
// before then fails it; after, it is logged and the read goes on.
func tail(ctx context.Context, cl *kgo.Client, topic string, log *slog.Logger, fn func(*kgo.Record), live func()) error {
	remaining, err := kafka.ToRead(ctx, cl, topic)
	if err != nil {
		return err
	}
	for {
		if live != nil && len(remaining) == 0 {
			live()
			live = nil
		}
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return nil
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("read %s/%d: %w", t, p, err) })
		if ferr != nil && live != nil {
			return ferr
		} else if ferr != nil {
			log.Warn("follow the topic", "topic", topic, "error", ferr)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			fn(r)
			if end, ok := remaining[r.Partition]; ok && r.Offset+1 >= end {
				delete(remaining, r.Partition)
			}
		})
	}
}

// sinkTables is the planner's view of the sink tables in ClickHouse: it checks, at submit, that an
// existing table can take the job's rows and that no other job owns it, and records the job's claim
// once the job is planned. It connects on first use and again after a failure; when ClickHouse
// cannot be asked it lets the job through, and says so (the loaders hold the records of a table
// that refuses them; an ownership it could not check is not enforced).
type sinkTables struct {
	cfg chconn.Config
	log *slog.Logger

	mu   sync.Mutex
	conn *chconn.Conn
}

func newSinkTables(cfg chconn.Config, log *slog.Logger) *sinkTables {
	cfg.CreateDatabase = false
	cfg.DialTimeout = min(cfg.DialTimeout, 5*time.Second)
	return &sinkTables{cfg: cfg, log: log}
}

// Check says why the job of claim c cannot write table with the rows of sink (nil: the raw
// landing rows): columns that cannot take them, a Buffer table, a table another job writes.
func (s *sinkTables) Check(ctx context.Context, table string, sink *chsink.Sink, c chsink.Claim) error {
	if c.Cluster != "" && c.Cluster != s.cfg.Cluster {
		writes := "one server (SLUICE_CLICKHOUSE_CLUSTER is empty)"
		if s.cfg.Cluster != "" {
			writes = "cluster " + s.cfg.Cluster + " (SLUICE_CLICKHOUSE_CLUSTER)"
		}
		return fmt.Errorf("%w: sink.cluster is %s, and this deployment writes %s", chsink.ErrIncompatibleTable, c.Cluster, writes)
	}
	return s.do(ctx, table, func(ctx context.Context, conn *chconn.Conn) error {
		if err := chsink.CheckTable(ctx, conn, table, sink); err != nil {
			return err
		}
		return chsink.CheckOwner(ctx, conn, table, sink, c)
	})
}

// Claim records that the job of c writes table; it refuses the claim (ErrOwned) when another job
// claimed the table meanwhile.
func (s *sinkTables) Claim(ctx context.Context, table string, c chsink.Claim) error {
	return s.do(ctx, table, func(ctx context.Context, conn *chconn.Conn) error {
		return chsink.ClaimTable(ctx, conn, table, c)
	})
}

// do runs fn on the connection; a failure that is not a refusal lets the job through.
func (s *sinkTables) do(ctx context.Context, table string, fn func(context.Context, *chconn.Conn) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if s.conn == nil {
		c, err := chconn.Open(ctx, s.cfg, s.log)
		if err != nil {
			s.log.Warn("cannot check the sink table at submit; accepting the job unchecked (the loaders check its columns, its owner stays unrecorded)", "table", table, "error", err)
			return nil
		}
		s.conn = c
	}
	err := fn(ctx, s.conn)
	if err != nil && !refusedTable(err) {
		s.log.Warn("cannot check the sink table at submit; accepting the job unchecked (the loaders check its columns, its owner stays unrecorded)", "table", table, "error", err)
		s.conn.Close()
		s.conn = nil
		return nil
	}
	return err
}

// refusedTable reports whether err refuses a job its sink table (a 400), rather than failing to ask.
func refusedTable(err error) bool {
	return errors.Is(err, chsink.ErrIncompatibleTable) || errors.Is(err, chsink.ErrNoTable) || errors.Is(err, chsink.ErrOwned)
}
