package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/sethvargo/go-envconfig"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/time/rate"

	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/kafka"
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
		cfg:           cfg.Extractor,
		topics:        topics{raw: cfg.Kafka.RawTopic, dlq: cfg.Kafka.DLQTopic, events: cfg.Kafka.EventsTopic},
		lookup:        os.LookupEnv,
		offsets:       newOffsetTracker(),
		backoff:       pipeline.Backoff{Base: cfg.Extractor.RetryBase, Max: cfg.Extractor.RetryMax},
		now:           time.Now,
		cancels:       map[tp]context.CancelFunc{},
		partitionCtxs: map[tp]context.Context{},
		limiters:      map[string]*rate.Limiter{},
		lag:           kafka.NewLagReporter(cfg.Extractor.Group, cfg.Kafka.TasksTopic, 10*time.Second),
	}
	rt, err := service.Start(ctx, "extractor", stdout, cfg.Config,
		kgo.ConsumerGroup(cfg.Extractor.Group),
		kgo.ConsumeTopics(cfg.Kafka.TasksTopic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsAssigned(x.lag.Assigned),
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
	x.metrics = newExtractorMetrics(rt.Registry, pipeline.NewMetrics(rt.Registry))
	x.fetch = &source.Fetcher{
		Client: &http.Client{
			Transport:     &http.Transport{MaxIdleConnsPerHost: cfg.Extractor.Concurrency * 2, ForceAttemptHTTP2: true},
			CheckRedirect: source.SameHostRedirects,
		},
		MaxBody: cfg.Extractor.MaxBodyBytes,
		Metrics: x.metrics.fetch,
		Now:     time.Now,
	}
	rt.Registry.MustRegister(x.lag.Collector())
	return rt.Run(ctx, rt.NewServer(cfg.HTTPAddr), x.Run, func(ctx context.Context) error { return x.lag.Run(ctx, rt.Kafka, rt.Log) })
}
