package main

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/sluicedata/sluice/pkg/dlq"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// letterFlags choose dead letters by job, stage, class and the time they failed.
type letterFlags struct {
	job, stage, class string
	since, until      string
	from, to          time.Time
}

func (f *letterFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.job, "job", "", "only this job's dead letters")
	cmd.Flags().StringVar(&f.stage, "stage", "", "only this stage: extract or load")
	cmd.Flags().StringVar(&f.class, "class", "", "only this error class")
	cmd.Flags().StringVar(&f.since, "since", "", "only letters that failed at or after this time (RFC 3339, or a duration ago such as 2h)")
	cmd.Flags().StringVar(&f.until, "until", "", "only letters that failed before this time (RFC 3339, or a duration ago)")
}

// parse checks the flags; now is what a duration counts back from.
func (f *letterFlags) parse(now time.Time) error {
	if f.stage != "" && f.stage != "extract" && f.stage != "load" {
		return &exitError{code: exitUsage, err: fmt.Errorf("--stage %q: want extract or load", f.stage)}
	}
	for _, t := range []struct {
		flag, v string
		at      *time.Time
	}{{"since", f.since, &f.from}, {"until", f.until, &f.to}} {
		if t.v == "" {
			continue
		}
		if at, err := time.Parse(time.RFC3339, t.v); err == nil {
			*t.at = at
		} else if d, err := time.ParseDuration(t.v); err == nil && d >= 0 {
			*t.at = now.Add(-d)
		} else {
			return &exitError{code: exitUsage, err: fmt.Errorf("--%s %q: want a time in RFC 3339 (2026-12-07T10:00:00Z) or a duration ago (2h)", t.flag, t.v)}
		}
	}
	return nil
}

func (f *letterFlags) any() bool {
	return f.job != "" || f.stage != "" || f.class != "" || f.since != "" || f.until != ""
}

func (f *letterFlags) keeps(r letterRow) bool {
	return (f.job == "" || r.JobID == f.job) && (f.stage == "" || r.Stage == f.stage) && (f.class == "" || r.Class == f.class) &&
		(f.from.IsZero() || !r.FailedAt.Before(f.from)) && (f.to.IsZero() || r.FailedAt.Before(f.to))
}

// replay is what a replay does with one dead letter.
type replay struct {
	letterRow
	// Action is "run the task again", "back onto the raw topic", or "skip"; Why says why a letter is
	// skipped.
	Action string `json:"action"`
	Why    string `json:"why,omitempty"`
	rec    *kgo.Record
}

// Replay actions.
const (
	actionTask = "task"
	actionRaw  = "record"
	actionSkip = "skip"
)

// planReplay decides what replaying dl, read from r, does: an extraction letter of a task runs the
// task again; a record's letter from the loader puts the record back onto the raw topic, under a
// run of its own, so that the planner does not count it for its job a second time (a job counts
// the records of its tasks' final runs); a letter without what that needs is skipped, with why.
func planReplay(r *kgo.Record, dl *sluicev1.DeadLetter, topics replayTopics) replay {
	rp := replay{letterRow: dlq.Summarize(r, dl), Action: actionSkip}
	replayOf := []kgo.RecordHeader{{Key: dlq.HeaderReplayOf, Value: fmt.Appendf(nil, "%s/%d/%d", r.Topic, r.Partition, r.Offset)}}
	switch {
	case dl.Truncated:
		rp.Why = "the payload was too large to keep in the letter (only its size and sha256)"
	case dl.Record != nil:
		env := proto.CloneOf(dl.Record)
		env.Payload = dl.Payload
		env.Checked = false // the loader checks a record put back, whatever was done to it
		env.Run = fmt.Sprintf("replay of %s/%d/%d", r.Topic, r.Partition, r.Offset)
		value, err := proto.Marshal(env)
		if err != nil {
			rp.Why = "the record does not encode: " + err.Error()
			return rp
		}
		rp.Action = actionRaw
		rp.rec = &kgo.Record{Topic: topics.raw, Key: dl.OriginalKey, Value: value, Headers: replayOf}
	case dl.Stage == sluicev1.DeadLetter_STAGE_EXTRACT:
		var task sluicev1.Task
		if err := proto.Unmarshal(dl.Payload, &task); err != nil || task.TaskId == "" || task.TaskId != dl.TaskId {
			rp.Why = "the payload is not the task the letter names"
			return rp
		}
		rp.Action = actionTask
		rp.rec = &kgo.Record{Topic: topics.tasks, Key: dl.OriginalKey, Value: dl.Payload, Headers: replayOf}
	default:
		rp.Why = "a record's letter written before letters kept the record's envelope: its table is not known"
	}
	return rp
}

type replayTopics struct{ tasks, raw string }

// dlqReplayCmd puts dead letters back where they failed: a dry run unless --execute.
func (c *cli) dlqReplayCmd() *cobra.Command {
	var f letterFlags
	var execute, all bool
	cmd := &cobra.Command{
		Use:   "replay {--job J | --stage S | --class C | --since T | --until T | --all} [--execute]",
		Short: "replay dead letters: extraction letters run their task again, the loader's letters go back onto the raw topic (a dry run without --execute)",
		Long: `replay reads the dead-letter topic to its current end and puts the letters the flags choose back
where they failed, once the cause is fixed (the source answers again, the table has its column, the
topic takes larger messages):

  - an extraction letter of a task runs the task again, from its first page (a task of a cancelled
    job is skipped by the extractors);
  - a record's letter from the loader puts the record back onto the raw topic, with its job, task
    and table, for the loaders.

The extractor's too_large letters cannot be replayed: the record the raw topic refused is not kept
(the dead-letter topic would refuse it too); run their task again once the raw topic takes larger
messages. A replayed record counts for its job's table, not for the job's counts, which were
decided.

Without --execute it only says what it would do. Replaying twice adds nothing once ClickHouse
collapses the repeated rows (SELECT … FINAL): they have the same keys. A letter that fails again is
dead-lettered again, as a new letter. A task dead-lettered more than once runs once.`,
		Args: cobra.NoArgs,
	}
	out := outputFlag(cmd)
	f.add(cmd)
	cmd.Flags().BoolVar(&execute, "execute", false, "do it: without it, a dry run")
	cmd.Flags().BoolVar(&all, "all", false, "every dead letter (no filter)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.parse(time.Now()); err != nil {
			return err
		}
		if !f.any() && !all {
			return &exitError{code: exitUsage, err: fmt.Errorf("say which letters: --job, --stage, --class, --since or --until, or --all")}
		}
		return c.replay(cmd.Context(), &f, execute, *out)
	}
	return cmd
}

// replay reads the letters f chooses and, with execute, puts them back. Records go out while the
// topic is read (the client's buffer bounds what is held); tasks once it is read to its end, each
// task from its newest letter.
func (c *cli) replay(ctx context.Context, f *letterFlags, execute bool, out format) error {
	cl, cfg, err := c.lettersClient(ctx)
	if err != nil {
		return failed(err)
	}
	defer cl.Close()
	topics := replayTopics{tasks: cfg.Kafka.TasksTopic, raw: cfg.Kafka.RawTopic}
	var (
		plan       []replay
		lastOfTask = map[string]int{} // a task's newest letter: the one that runs it again
		firstErr   error
		errMu      sync.Mutex
		sent       atomic.Int64
		tasks      int
		records    int
		skipped    int
	)
	produced := func(_ *kgo.Record, err error) {
		if err != nil {
			errMu.Lock()
			firstErr = cmp.Or(firstErr, err)
			errMu.Unlock()
			return
		}
		if n := sent.Add(1); n%10_000 == 0 {
			fmt.Fprintf(c.stderr, "replayed %d messages…\n", n)
		}
	}
	err = c.scanLetters(ctx, cl, cfg.Kafka.DLQTopic, func(rec *kgo.Record, dl *sluicev1.DeadLetter) bool {
		if !f.keeps(dlq.Summarize(rec, dl)) {
			return true
		}
		rp := planReplay(rec, dl, topics)
		switch rp.Action {
		case actionTask:
			if i, ok := lastOfTask[rp.TaskID]; ok {
				plan[i].Action, plan[i].Why, plan[i].rec = actionSkip, "a newer letter of the same task replays it", nil
				tasks--
				skipped++
			}
			lastOfTask[rp.TaskID] = len(plan)
			tasks++
		case actionRaw:
			if execute {
				cl.Produce(ctx, rp.rec, produced)
			}
			rp.rec = nil // sent, or not to be: its payload need not stay
			records++
		default:
			skipped++
		}
		plan = append(plan, rp)
		return true
	})
	if err != nil {
		return failed(err)
	}
	if execute {
		for _, rp := range plan {
			if rp.Action == actionTask {
				cl.Produce(ctx, rp.rec, produced)
			}
		}
		if tasks+records > 0 {
			fmt.Fprintf(c.stderr, "replaying %d tasks and %d records…\n", tasks, records)
		}
		if err := cl.Flush(ctx); err != nil {
			return failed(fmt.Errorf("replay: %w", err))
		}
		if firstErr != nil {
			return failed(fmt.Errorf("replay: %d of %d messages written, then: %w (replaying again adds nothing after FINAL)", sent.Load(), tasks+records, firstErr))
		}
	}
	if out != "table" {
		if err := encode(c.stdout, out, map[string]any{"executed": execute, "tasks": tasks, "records": records, "skipped": skipped, "letters": plan}); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "OFFSET\tSTAGE\tCLASS\tJOB\tTASK\tREPLAY")
		for _, rp := range plan {
			what := map[string]string{actionTask: "run the task again", actionRaw: "record back onto " + topics.raw}[rp.Action]
			if rp.Action == actionSkip {
				what = "skip: " + rp.Why
			}
			fmt.Fprintf(tw, "%d/%d\t%s\t%s\t%s\t%s\t%s\n", rp.Partition, rp.Offset, rp.Stage, rp.Class, rp.JobID, rp.TaskID, what)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	switch {
	case !execute && tasks+records > 0:
		fmt.Fprintf(c.stderr, "dry run: %d tasks would run again and %d records go back onto %s; %d letters skipped. --execute does it.\n", tasks, records, topics.raw, skipped)
	case execute && tasks+records > 0:
		fmt.Fprintf(c.stderr, "replayed: %d tasks run again, %d records back onto %s; %d letters skipped\n", tasks, records, topics.raw, skipped)
	default:
		fmt.Fprintf(c.stderr, "nothing to replay: %d letters chosen, %d skipped\n", len(plan), skipped)
	}
	return nil
}
