package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/sethvargo/go-envconfig"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/dlq"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/logging"
)

// letterRow is one dead letter as `sluicectl dlq list` shows it.
type letterRow struct {
	Partition         int32     `json:"partition"`
	Offset            int64     `json:"offset"`
	Stage             string    `json:"stage"`
	Class             string    `json:"error_class"`
	Message           string    `json:"error_message"`
	Attempts          uint32    `json:"attempts"`
	JobID             string    `json:"job_id"`
	TaskID            string    `json:"task_id"`
	OriginalTopic     string    `json:"original_topic"`
	OriginalPartition int32     `json:"original_partition"`
	OriginalOffset    int64     `json:"original_offset"`
	PayloadSize       uint64    `json:"payload_size"`
	PayloadSHA256     string    `json:"payload_sha256"`
	Truncated         bool      `json:"truncated"`
	HTTPStatus        uint32    `json:"http_status,omitempty"`
	FailedAt          time.Time `json:"failed_at"`
}

// deadLetters reads the dead-letter topic from its start to its current end.
func deadLetters(ctx context.Context, args []string, lookup envconfig.Lookuper, stdout, stderr io.Writer) (int, error) {
	if len(args) == 0 || args[0] != "list" {
		fmt.Fprintln(stderr, "usage: sluicectl dlq list [--job J] [--stage extract|load] [--class C] [--limit N] [-o table|json]")
		return exitUsage, errUsage
	}
	fs := flag.NewFlagSet("dlq list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jobID := fs.String("job", "", "only this job's dead letters")
	stage := fs.String("stage", "", "only this stage: extract or load")
	class := fs.String("class", "", "only this error class")
	limit := fs.Int("limit", 0, "at most this many (0: all)")
	output := fs.String("o", "table", "output format: table or json")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 0 {
		return exitUsage, errUsage
	}

	var cfg Config
	if err := config.Load(ctx, lookup, &cfg); err != nil {
		return exitFailed, err
	}
	log, err := logging.New(stderr, cfg.Log, "sluicectl")
	if err != nil {
		return exitFailed, err
	}
	cl, err := kafka.NewClient(cfg.Kafka, "sluicectl", log, nil,
		kgo.ConsumeTopics(cfg.Kafka.DLQTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return exitFailed, err
	}
	defer cl.Close()
	var rows []letterRow
	err = kafka.ReadToEnd(ctx, cl, cfg.Kafka.DLQTopic, func(r *kgo.Record) bool {
		dl, err := dlq.Decode(r)
		if err != nil {
			fmt.Fprintln(stderr, "sluicectl:", err)
			return true
		}
		row := letterRow{Partition: r.Partition, Offset: r.Offset, Stage: dlq.Stage(dl.Stage), Class: dl.ErrorClass,
			Message: dl.ErrorMessage, Attempts: dl.Attempts, JobID: dl.JobId, TaskID: dl.TaskId,
			OriginalTopic: dl.OriginalTopic, OriginalPartition: dl.OriginalPartition, OriginalOffset: dl.OriginalOffset,
			PayloadSize: dl.PayloadSize, PayloadSHA256: hex.EncodeToString(dl.PayloadSha256), Truncated: dl.Truncated,
			HTTPStatus: dl.HttpStatus, FailedAt: dl.FailedAt.AsTime()}
		if (*jobID == "" || row.JobID == *jobID) && (*stage == "" || row.Stage == *stage) && (*class == "" || row.Class == *class) {
			rows = append(rows, row)
		}
		return *limit == 0 || len(rows) < *limit
	})
	if err != nil {
		return exitFailed, err
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return exitOK, enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OFFSET\tSTAGE\tCLASS\tJOB\tTASK\tORIGIN\tATTEMPTS\tSIZE\tMESSAGE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d/%d\t%s\t%s\t%s\t%s\t%s/%d@%d\t%d\t%d\t%s\n", r.Partition, r.Offset, r.Stage, r.Class,
			r.JobID, r.TaskID, r.OriginalTopic, r.OriginalPartition, r.OriginalOffset, r.Attempts, r.PayloadSize, r.Message)
	}
	return exitOK, tw.Flush()
}
