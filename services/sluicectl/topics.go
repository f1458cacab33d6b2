package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/kafka"
)

// topicRow is one line of `sluicectl topics` output.
type topicRow struct {
	Topic      string `json:"topic"`
	Partitions int32  `json:"partitions"`
	Wanted     int32  `json:"wanted_partitions"`
	Status     string `json:"status"` // created, exists, fewer_partitions, missing
}

// topicsCmd creates the missing topics (or with --check only looks) and prints one row per topic.
// With --check it exits 3 when a topic is missing or has fewer partitions than configured.
func (c *cli) topicsCmd() *cobra.Command {
	var check bool
	cmd := &cobra.Command{Use: "topics", Short: "create the pipeline's missing topics, or with --check only check them (exit 3 when one is missing)", Args: cobra.NoArgs}
	out := outputFlag(cmd)
	cmd.Flags().BoolVar(&check, "check", false, "only check; exit 3 when a topic is missing or has fewer partitions")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		code, err := c.topics(cmd.Context(), check, *out)
		if err != nil {
			return failed(err)
		}
		c.code = code
		return nil
	}
	return cmd
}

func (c *cli) topics(ctx context.Context, check bool, output format) (int, error) {
	stdout := c.stdout
	var cfg Config
	if err := config.Load(ctx, c.lookup, &cfg); err != nil {
		return exitFailed, err
	}
	log, err := c.logger(cfg.Log)
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
	if check {
		report, err = kafka.CheckTopics(ctx, cl, want)
	} else {
		report, err = kafka.EnsureTopics(ctx, cl, int16(cfg.Kafka.ReplicationFactor), want)
	}
	if err != nil {
		return exitFailed, err
	}

	rows := topicRows(want, report)
	if err := printTopics(stdout, output, rows); err != nil {
		return exitFailed, err
	}
	if check && (len(report.Missing) > 0 || len(report.Fewer) > 0) {
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

func printTopics(w io.Writer, f format, rows []topicRow) error {
	if f != "table" {
		return encode(w, f, rows)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITIONS\tWANTED\tSTATUS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", r.Topic, r.Partitions, r.Wanted, r.Status)
	}
	return tw.Flush()
}
