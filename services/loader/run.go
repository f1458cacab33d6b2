package main

import (
	"context"
	"io"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/sethvargo/go-envconfig"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/catalog"
	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/ops"
	"github.com/sluicedata/sluice/pkg/pipeline"
	"github.com/sluicedata/sluice/pkg/service"
)

// GCPercent is the loader's GOGC unless the environment sets one. Its heap is mostly batches that
// live a second or two, so the collector's default (100: the heap grows to twice what is live)
// doubled what it holds: with the default batch it peaked at 256-264 MiB resident, and at 50 at
// 213-214 MiB, for a little more of its own CPU (BenchmarkLoader, 1,000,000 records, in the same
// runs).
const GCPercent = 50

// run loads the configuration, connects to Kafka and ClickHouse, and loads the raw topic into
// ClickHouse until ctx ends; /readyz answers ready while both answer.
func run(ctx context.Context, lookup envconfig.Lookuper, stdout io.Writer) error {
	var cfg Config
	if err := config.Load(ctx, lookup, &cfg); err != nil {
		return err
	}
	if _, set := lookup.Lookup("GOGC"); !set {
		debug.SetGCPercent(GCPercent)
	}
	lag := kafka.NewLagReporter(cfg.Loader.Group, cfg.Kafka.RawTopic, 10*time.Second)
	backoff := pipeline.Backoff{Base: 100 * time.Millisecond, Max: cfg.Loader.RetryMaxBackoff}
	// The loader comes first: its rebalance callbacks are options of the client that connects it.
	l := newLoader(cfg.Loader, topics{raw: cfg.Kafka.RawTopic, dlq: cfg.Kafka.DLQTopic}, lag, backoff)
	revoked := func(ctx context.Context, cl *kgo.Client, ps map[string][]int32) {
		lag.Revoked(ctx, cl, ps)
		l.revoked(ctx, cl, ps)
	}
	rt, err := service.Start(ctx, "loader", stdout, cfg.Config,
		kgo.OnPartitionsAssigned(func(ctx context.Context, cl *kgo.Client, ps map[string][]int32) {
			lag.Assigned(ctx, cl, ps)
			l.assigned(ctx, cl, ps)
		}),
		kgo.OnPartitionsRevoked(revoked),
		kgo.OnPartitionsLost(func(ctx context.Context, cl *kgo.Client, ps map[string][]int32) {
			lag.Revoked(ctx, cl, ps)
			l.lost(ctx, cl, ps)
		}),
		kgo.ConsumerGroup(cfg.Loader.Group),
		kgo.ConsumeTopics(cfg.Kafka.RawTopic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxPartitionBytes(8<<20),
		// What franz-go fetches ahead of the loader is held decompressed, about twice its size on
		// the wire, beside the two batches the loader holds: with franz-go's default of 50 MB its
		// peak memory passed 400 MiB, with 24 MB it was 254-282 MiB and with 12 MB 213-214 MiB,
		// at the same rate (BenchmarkLoader, 1,000,000 records).
		kgo.FetchMaxBytes(12<<20),
		// Fewer, fuller fetches cost the broker less per record; the loader batches for a second anyway.
		kgo.FetchMinBytes(1<<20),
		kgo.FetchMaxWait(200*time.Millisecond),
		// A dead letter or an event that cannot be delivered fails within the step, which is then
		// retried after the group had its chance to rebalance, instead of holding it off.
		kgo.RecordDeliveryTimeout(cfg.Loader.FlushTimeout),
	)
	if err != nil {
		return err
	}
	ch, err := chconn.Open(ctx, cfg.ClickHouse, rt.Log)
	if err != nil {
		rt.Kafka.Close()
		return err
	}
	defer ch.Close()
	rt.Log.Info("connected to clickhouse", "addr", strings.Join(cfg.ClickHouse.Addr, ","), "tls", cfg.ClickHouse.TLS,
		"user", cfg.ClickHouse.Username, "version", ch.Version.String(), "database", ch.Database, "features", ch.Features)

	var writer batchWriter = chsink.NewWriter(ch, rt.Log)
	if cfg.ClickHouse.Cluster != "" {
		cw, err := chsink.NewClusterWriter(ctx, ch, cfg.ClickHouse, rt.Log)
		if err != nil {
			rt.Kafka.Close()
			return err
		}
		defer cw.Close()
		down := promauto.With(rt.Registry).NewGaugeVec(prometheus.GaugeOpts{Name: "loader_shard_unavailable",
			Help: "1 while no replica of the cluster's shard took the loader's last insert into it, 0 once one did."}, []string{"shard"})
		cw.OnShard = func(shard uint32, took bool) {
			v := 1.0
			if took {
				v = 0
			}
			down.WithLabelValues(strconv.FormatUint(uint64(shard), 10)).Set(v)
		}
		writer = cw
		rt.Log.Info("writing a cluster: each row into a replica of its shard", "cluster", cw.Cluster().Name,
			"shards", len(cw.Cluster().Shards), "insert_quorum", cfg.ClickHouse.InsertQuorum)
	}
	metrics := newLoaderMetrics(rt.Registry, pipeline.NewMetrics(rt.Registry))
	limit, err := kafka.MaxMessageBytes(ctx, rt.Kafka, cfg.Kafka.DLQTopic, cfg.Kafka.EventsTopic)
	if err != nil {
		rt.Log.Warn("assuming the default message limit for dead letters and events", "bytes", limit, "error", err)
	}
	l.connect(links{cl: rt.Kafka, denied: rt.Denials.Observe, log: rt.Log, metrics: metrics,
		writer: writer,
		sinks: catalog.New(cfg.Kafka.SchemasTopic, func() (*kgo.Client, error) {
			return kafka.NewClient(cfg.Kafka, "loader-schemas", rt.Log, nil,
				kgo.ConsumeTopics(cfg.Kafka.SchemasTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		}),
		core:   delivery.NewCore(rt.Kafka, delivery.NewRetrier(rt.Registry, rt.Log), cfg.Kafka.EventsTopic, limit, backoff),
		tokens: ch.Features.InsertDeduplicationToken,
	})
	if ch.Features.InsertDeduplicationToken {
		l.inserter.readTopicID(ctx, rt.Kafka)
	}
	lag.Watch(cfg.StallTimeout, rt.Log)
	rt.Registry.MustRegister(lag.Collector())
	srv := rt.NewServer(cfg.HTTPAddr, ops.Check{Name: "clickhouse", Func: ch.Ping}, ops.Check{Name: "progress", Func: lag.Ready})
	return rt.Run(ctx, srv, l.Run, func(ctx context.Context) error { return lag.Run(ctx, rt.Kafka, rt.Log) })
}
