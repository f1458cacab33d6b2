package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/sethvargo/go-envconfig"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/events"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/ops"
	"github.com/sluicedata/sluice/pkg/pipeline"
	"github.com/sluicedata/sluice/pkg/service"
	"github.com/sluicedata/sluice/pkg/source"
)

// run loads the configuration, joins the extractor group on the tasks topic and extracts tasks
// until ctx ends.
func run(ctx context.Context, lookup envconfig.Lookuper, stdout io.Writer) error {
	var cfg Config
	if err := config.Load(ctx, lookup, &cfg); err != nil {
		return err
	}
	x := &Extractor{
		cfg:         cfg.Extractor,
		topics:      topics{tasks: cfg.Kafka.TasksTopic, raw: cfg.Kafka.RawTopic, dlq: cfg.Kafka.DLQTopic, events: cfg.Kafka.EventsTopic},
		offsets:     newOffsetTracker(),
		claims:      newClaims(),
		backoff:     pipeline.Backoff{Base: cfg.Extractor.RetryBase, Max: cfg.Extractor.RetryMax},
		now:         time.Now,
		owners:      map[tp]*owner{},
		pacers:      newPacers(),
		membersKick: make(chan struct{}, 1),
		wantSlot:    make(chan struct{}, 1),
		jobSlots:    map[string]chan struct{}{},
		fatal:       make(chan error, 1),
		unparked:    make(chan struct{}, 1),
		commits:     make(chan struct{}, 1),
		lag:         kafka.NewLagReporter(cfg.Extractor.Group, cfg.Kafka.TasksTopic, 10*time.Second),
		cancelled:   events.NewCancelled(),
	}
	rt, err := service.Start(ctx, "extractor", stdout, cfg.Config,
		// The raw topic refuses a whole batch for one record over its limit: batches stay under it.
		kgo.ProducerBatchMaxBytes(int32(kafka.ProducerBatchLimit(ctx, cfg.Kafka, cfg.Kafka.RawTopic))),
		kgo.ConsumerGroup(cfg.Extractor.Group),
		kgo.ConsumeTopics(cfg.Kafka.TasksTopic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsAssigned(func(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
			x.lag.Assigned(ctx, cl, assigned)
			x.assigned(ctx, cl, assigned)
			select { // the members changed: count them again
			case x.membersKick <- struct{}{}:
			default:
			}
		}),
		kgo.OnPartitionsRevoked(x.revoked),
		kgo.OnPartitionsLost(x.lost),
		kgo.MaxBufferedRecords(cfg.Extractor.MaxBufferedRecords),
		kgo.MaxBufferedBytes(cfg.Extractor.MaxBufferedBytes),
		// A produce that cannot be delivered fails its task, which then runs again, instead of
		// waiting forever (and past every shutdown deadline).
		kgo.RecordDeliveryTimeout(2*time.Minute),
	)
	if err != nil {
		return err
	}
	x.cl = rt.Kafka
	x.log = rt.Log
	x.maxRecordBytes, err = kafka.MaxMessageBytes(ctx, rt.Kafka, cfg.Kafka.RawTopic)
	if err != nil {
		rt.Log.Warn("assuming the default message limit of the raw topic", "bytes", x.maxRecordBytes, "error", err)
	}
	limit, err := kafka.MaxMessageBytes(ctx, rt.Kafka, cfg.Kafka.DLQTopic, cfg.Kafka.EventsTopic)
	if err != nil {
		rt.Log.Warn("assuming the default message limit for dead letters and events", "bytes", limit, "error", err)
	}
	retry := delivery.NewRetrier(rt.Registry, rt.Log)
	x.core = delivery.NewCore(rt.Kafka, retry, cfg.Kafka.EventsTopic, limit, x.backoff)
	x.denied = rt.Denials.Observe
	x.metrics = newExtractorMetrics(rt.Registry, pipeline.NewMetrics(rt.Registry))
	secrets, err := newSecrets(cfg.SecretDirs, cfg.SecretHosts, rt.Log)
	if err != nil {
		return err
	}
	egress, err := source.ParseEgress(cfg.SourceAllow)
	if err != nil { // Validate checked it
		return fmt.Errorf("SLUICE_SOURCE_ALLOW: %w", err)
	}
	rt.Log.Info("sources may reach "+egress.String(), "variable", "SLUICE_SOURCE_ALLOW")
	transport := egress.Transport()
	transport.MaxIdleConns, transport.MaxIdleConnsPerHost = 0, cfg.Extractor.Concurrency*2
	x.sources = source.Env{
		Fetcher: &source.Fetcher{
			Client:  &http.Client{Transport: transport, CheckRedirect: source.SameHostRedirects},
			MaxBody: cfg.Extractor.MaxBodyBytes, MaxRecords: cfg.Extractor.MaxPageRecords,
			Metrics: x.metrics.fetch,
			Retry:   retry,
			Now:     time.Now,
			Observe: x.hear,
		},
		Lookup:       secrets.Lookup,
		Allowed:      secrets.Allowed,
		Backoff:      x.backoff,
		PageDeadline: cfg.Extractor.PageDeadline,
		Tokens: &source.Tokens{Client: egress.Client(), Now: time.Now,
			Issued: x.metrics.tokens.Inc},
		Postgres: &source.Pools{MaxConns: int32(cfg.Extractor.Concurrency), Egress: egress},
	}
	defer x.sources.Postgres.Close()
	// The jobs topic says which jobs were cancelled; a member that cannot read it still extracts
	// (and fails readiness, saying what the brokers refuse).
	jobsCl, err := kafka.NewClient(cfg.Kafka, "sluice-extractor-jobs", rt.Log, nil,
		kgo.ConsumeTopics(cfg.Kafka.JobsTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	x.lag.Watch(cfg.StallTimeout, rt.Log)
	rt.Registry.MustRegister(x.lag.Collector())
	return rt.Run(ctx, rt.NewServer(cfg.HTTPAddr, ops.Check{Name: "progress", Func: x.lag.Ready}), x.Run,
		func(ctx context.Context) error { return x.lag.Run(ctx, rt.Kafka, rt.Log) },
		func(ctx context.Context) error { return x.countMembers(ctx, x.membersKick) },
		func(ctx context.Context) error {
			return x.cancelled.Follow(ctx, jobsCl, cfg.Kafka.JobsTopic, rt.Log, rt.Denials.Observe)
		})
}

// newSecrets is how this process resolves sources' secrets.
func newSecrets(dirs []string, hosts string, log *slog.Logger) (source.Secrets, error) {
	bound, err := source.ParseSecretHosts(hosts)
	if err != nil {
		return source.Secrets{}, fmt.Errorf("SLUICE_SECRET_HOSTS: %w", err)
	}
	if bound == nil {
		log.Info("no secret is bound to a host: jobs cannot use ${SOURCE_…} or ${file:…} references until SLUICE_SECRET_HOSTS binds them")
	}
	return source.Secrets{Env: os.LookupEnv, Dirs: dirs, Hosts: bound}, nil
}
