package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/dlq"
	"github.com/sluicedata/sluice/pkg/kafka"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// letterRow is one dead letter as `sluicectl dlq list` shows it.
type letterRow = dlq.Summary

// dlqListCmd reads the dead-letter topic from its start to its current end.
func (c *cli) dlqListCmd() *cobra.Command {
	var f letterFlags
	var limit int
	cmd := &cobra.Command{Use: "list", Short: "the dead letters, from the start of the topic to its current end", Args: cobra.NoArgs}
	out := outputFlag(cmd)
	f.add(cmd)
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many (0: all)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.parse(time.Now()); err != nil {
			return err
		}
		rows, err := c.readLetters(cmd.Context(), func(r letterRow, _ *sluicev1.DeadLetter) bool { return f.keeps(r) }, limit)
		if err != nil {
			return failed(err)
		}
		if *out != "table" {
			return encode(c.stdout, *out, rows)
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "OFFSET\tSTAGE\tCLASS\tJOB\tTASK\tORIGIN\tATTEMPTS\tSIZE\tMESSAGE")
		for _, r := range rows {
			fmt.Fprintf(tw, "%d/%d\t%s\t%s\t%s\t%s\t%s/%d@%d\t%d\t%d\t%s\n", r.Partition, r.Offset, r.Stage, r.Class,
				r.JobID, r.TaskID, r.OriginalTopic, r.OriginalPartition, r.OriginalOffset, r.Attempts, r.PayloadSize, r.Message)
		}
		return tw.Flush()
	}
	return cmd
}

// lettersClient is a client that reads the dead-letter topic from its start, with the configuration.
func (c *cli) lettersClient(ctx context.Context) (*kgo.Client, Config, error) {
	var cfg Config
	if err := config.Load(ctx, c.lookup, &cfg); err != nil {
		return nil, cfg, err
	}
	log, err := c.logger(cfg.Log)
	if err != nil {
		return nil, cfg, err
	}
	cl, err := kafka.NewClient(cfg.Kafka, "sluicectl", log, nil,
		kgo.ConsumeTopics(cfg.Kafka.DLQTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	return cl, cfg, err
}

// scanLetters reads the dead-letter topic with cl to its current end, calling fn with each letter
// until it returns false; a letter that does not decode is said on stderr and passed over.
func (c *cli) scanLetters(ctx context.Context, cl *kgo.Client, topic string, fn func(*kgo.Record, *sluicev1.DeadLetter) bool) error {
	return kafka.ReadToEnd(ctx, cl, topic, func(r *kgo.Record) bool {
		dl, err := dlq.Decode(r)
		if err != nil {
			fmt.Fprintln(c.stderr, "sluicectl:", err)
			return true
		}
		return fn(r, dl)
	})
}

// readLetters reads the dead-letter topic to its current end and returns the letters keep takes, at
// most limit (0: all).
func (c *cli) readLetters(ctx context.Context, keep func(letterRow, *sluicev1.DeadLetter) bool, limit int) ([]letterRow, error) {
	cl, cfg, err := c.lettersClient(ctx)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var rows []letterRow
	err = c.scanLetters(ctx, cl, cfg.Kafka.DLQTopic, func(r *kgo.Record, dl *sluicev1.DeadLetter) bool {
		if row := dlq.Summarize(r, dl); keep(row, dl) {
			rows = append(rows, row)
		}
		return limit == 0 || len(rows) < limit
	})
	return rows, err
}

// letter is one dead letter in full, as `sluicectl dlq show` prints it.
type letter struct {
	letterRow
	OriginalKey  string `json:"original_key"`
	Payload      string `json:"payload"`
	ResponseHead string `json:"response_head,omitempty"`
	// Encoding says how Payload and ResponseHead are written: text when they are UTF-8, else base64.
	Encoding string `json:"encoding"`
}

// dlqShowCmd prints one dead letter with its payload and the head of the source's answer.
func (c *cli) dlqShowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show PARTITION/OFFSET",
		Short: "one dead letter in full: its payload and the head of the source's answer (dlq list gives PARTITION/OFFSET)",
		Args:  cobra.ExactArgs(1),
	}
	out := outputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var partition int32
		var offset int64
		if n, err := fmt.Sscanf(args[0], "%d/%d", &partition, &offset); n != 2 || err != nil || partition < 0 || offset < 0 {
			return &exitError{code: exitUsage, err: fmt.Errorf("%q is not PARTITION/OFFSET, such as 0/42", args[0])}
		}
		var found *letter
		_, err := c.readLetters(cmd.Context(), func(r letterRow, dl *sluicev1.DeadLetter) bool {
			if r.Partition == partition && r.Offset == offset {
				found = fullLetter(r, dl)
			}
			return false
		}, 0)
		if err != nil {
			return failed(err)
		}
		if found == nil {
			return failed(fmt.Errorf("no dead letter at %s", args[0]))
		}
		if *out != "table" {
			return encode(c.stdout, *out, found)
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		for _, kv := range [][2]string{
			{"offset", args[0]}, {"stage", found.Stage}, {"class", found.Class}, {"message", found.Message},
			{"job", found.JobID}, {"task", found.TaskID}, {"attempts", fmt.Sprint(found.Attempts)},
			{"origin", fmt.Sprintf("%s/%d@%d", found.OriginalTopic, found.OriginalPartition, found.OriginalOffset)},
			{"key", found.OriginalKey}, {"failed at", found.FailedAt.Format(time.RFC3339Nano)},
			{"payload", fmt.Sprintf("%d bytes, sha256 %s, truncated %v, %s", found.PayloadSize, found.PayloadSHA256, found.Truncated, found.Encoding)},
		} {
			fmt.Fprintf(tw, "%s\t%s\n", kv[0], kv[1])
		}
		if found.HTTPStatus != 0 {
			fmt.Fprintf(tw, "http status\t%d\n", found.HTTPStatus)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "\n--- payload ---\n%s\n", found.Payload)
		if found.ResponseHead != "" {
			fmt.Fprintf(c.stdout, "--- response head ---\n%s\n", found.ResponseHead)
		}
		return nil
	}
	return cmd
}

func fullLetter(r letterRow, dl *sluicev1.DeadLetter) *letter {
	l := &letter{letterRow: r, Encoding: "text"}
	text := func(b []byte) string {
		if utf8.Valid(b) {
			return string(b)
		}
		l.Encoding = "base64"
		return base64.StdEncoding.EncodeToString(b)
	}
	payload, head, key := text(dl.Payload), text(dl.ResponseHead), text(dl.OriginalKey)
	if l.Encoding == "base64" { // all three in one encoding
		payload, head, key = base64.StdEncoding.EncodeToString(dl.Payload), base64.StdEncoding.EncodeToString(dl.ResponseHead), base64.StdEncoding.EncodeToString(dl.OriginalKey)
	}
	l.Payload, l.ResponseHead, l.OriginalKey = payload, head, key
	return l
}
