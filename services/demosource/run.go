package main

import (
	"context"
	"io"

	"github.com/sethvargo/go-envconfig"

	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/logging"
	"github.com/sluicedata/sluice/pkg/ops"
)

// run loads the configuration and serves the demo API next to the ops endpoints until ctx ends.
// It needs neither Kafka nor ClickHouse, so it builds its logger and registry itself rather than
// through pkg/service.
func run(ctx context.Context, lookup envconfig.Lookuper, stdout io.Writer) error {
	var cfg Config
	if err := config.Load(ctx, lookup, &cfg); err != nil {
		return err
	}
	log, err := logging.New(stdout, cfg.Log, "demosource")
	if err != nil {
		return err
	}
	reg := ops.NewRegistry()
	demo, err := demosource.New(cfg.Config, log, demosource.WithRegisterer(reg))
	if err != nil {
		return err
	}
	srv := ops.NewServer(cfg.HTTPAddr, reg, log)
	api := demo.Handler()
	srv.Handle("/api/", api)
	srv.Handle("/stats", api)
	srv.Handle("/stats/", api)
	log.Info("service started", "http", cfg.HTTPAddr, "records", cfg.Records, "record_size", cfg.RecordSize,
		"seed", cfg.Seed, "rate_429", cfg.Rate429, "rate_5xx", cfg.Rate5xx, "rate_slow", cfg.RateSlow,
		"rate_truncated", cfg.RateTruncated, "malformed_every", cfg.MalformedEvery, "fail_ranges", cfg.FailRanges)
	if err := srv.Run(ctx); err != nil {
		return err
	}
	log.Info("service stopped")
	return nil
}
