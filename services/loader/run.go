package main

import (
	"context"
	"io"

	"github.com/sethvargo/go-envconfig"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/ops"
	"github.com/sluicedata/sluice/pkg/service"
)

// run loads the configuration, connects to Kafka and ClickHouse, bootstraps the topics and serves
// the ops endpoints, ready when both answer, until ctx ends.
func run(ctx context.Context, lookup envconfig.Lookuper, stdout io.Writer) error {
	var cfg Config
	if err := config.Load(ctx, lookup, &cfg); err != nil {
		return err
	}
	rt, err := service.Start(ctx, "loader", stdout, cfg.Config)
	if err != nil {
		return err
	}
	ch, err := chconn.Open(ctx, cfg.ClickHouse, rt.Log)
	if err != nil {
		rt.Kafka.Close()
		return err
	}
	defer ch.Close()
	rt.Log.Info("connected to clickhouse", "version", ch.Version.String(), "database", ch.Database,
		"features", ch.Features)

	srv := rt.NewServer(cfg.HTTPAddr, ops.Check{Name: "clickhouse", Func: ch.Ping})
	return rt.Run(ctx, srv)
}
