package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/sethvargo/go-envconfig"

	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/logging"
)

// topicRow is one line of `sluicectl topics` output.
type topicRow struct {
	Topic      string `json:"topic"`
	Partitions int32  `json:"partitions"`
	Wanted     int32  `json:"wanted_partitions"`
	Status     string `json:"status"` // created, exists, fewer_partitions, missing
}

// topics creates the missing topics (or with --check only looks) and prints one row per topic.
// With --check it exits 3 when a topic is missing or has fewer partitions than configured.
func topics(ctx context.Context, args []string, lookup envconfig.Lookuper, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("topics", flag.ContinueOnError)
	fs.SetOutput(stderr)
	check := fs.Bool("check", false, "only check; exit 3 when a topic is missing or has fewer partitions")
	output := fs.String("o", "table", "output format: table or json")
	if err := fs.Parse(args); err != nil {
		return exitUsage, errUsage
	}
	if *output != "table" && *output != "json" {
		return exitUsage, fmt.Errorf("-o %s: want table or json", *output)
	}

	var cfg Config
	if err := config.Load(ctx, lookup, &cfg); err != nil {
		return exitFailed, err
	}
	log, err := logging.New(stderr, cfg.Log, "sluicectl")
	if err != nil {
		return exitFailed, err
	}
	cl, err := kafka.NewClient(cfg.Kafka, "sluicectl", log, nil)
	if err != nil {
		return exitFailed, err
	}
	defer cl.Close()

	want := cfg.Kafka.Topics()
	var report kafka.TopicReport
	if *check {
		report, err = kafka.CheckTopics(ctx, cl, want)
	} else {
		report, err = kafka.EnsureTopics(ctx, cl, int16(cfg.Kafka.ReplicationFactor), want)
	}
	if err != nil {
		return exitFailed, err
	}

	rows := topicRows(want, report)
	if err := printTopics(stdout, *output, rows); err != nil {
		return exitFailed, err
	}
	if *check && (len(report.Missing) > 0 || len(report.Fewer) > 0) {
		return exitNotReady, nil
	}
	return exitOK, nil
}

func topicRows(want []kafka.TopicSpec, r kafka.TopicReport) []topicRow {
	have := map[string]topicRow{}
	for _, t := range r.Created {
		have[t.Name] = topicRow{Partitions: t.Partitions, Status: "created"}
	}
	for _, t := range r.Existing {
		have[t.Name] = topicRow{Partitions: t.Partitions, Status: "exists"}
	}
	for _, t := range r.Fewer {
		have[t.Name] = topicRow{Partitions: t.Partitions, Status: "fewer_partitions"}
	}
	for _, t := range r.Missing {
		have[t.Name] = topicRow{Status: "missing"}
	}
	rows := make([]topicRow, len(want))
	for i, t := range want {
		row := have[t.Name]
		row.Topic, row.Wanted = t.Name, t.Partitions
		rows[i] = row
	}
	return rows
}

func printTopics(w io.Writer, format string, rows []topicRow) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITIONS\tWANTED\tSTATUS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", r.Topic, r.Partitions, r.Wanted, r.Status)
	}
	return tw.Flush()
}
