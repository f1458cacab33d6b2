package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/sluicedata/sluice/pkg/config"
)

// job is the planner's view of a job, as GET /v1/jobs/{id} serves it.
type job struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Table  string `json:"table"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	Tasks  struct {
		Planned      int `json:"planned"`
		Extracted    int `json:"extracted"`
		DeadLettered int `json:"dead_lettered"`
	} `json:"tasks"`
	Records struct {
		Expected     int64  `json:"expected"`
		Extracted    uint64 `json:"extracted"`
		Loaded       uint64 `json:"loaded"`
		DeadLettered uint64 `json:"dead_lettered"`
	} `json:"records"`
	RecordsPerSecond float64    `json:"records_per_second"`
	CreatedAt        time.Time  `json:"created_at"`
	FinishedAt       *time.Time `json:"finished_at,omitempty"`
}

// plannerClient talks to the planner's jobs API.
type plannerClient struct {
	base  string
	http  *http.Client
	token config.Secret
}

func newPlannerClient(ctx context.Context, lookup envconfig.Lookuper) (*plannerClient, error) {
	var cfg PlannerConfig
	if err := config.Load(ctx, lookup, &cfg); err != nil {
		return nil, err
	}
	token, err := cfg.token()
	if err != nil {
		return nil, err
	}
	return &plannerClient{base: strings.TrimRight(cfg.URL, "/"), http: &http.Client{Timeout: cfg.Timeout}, token: token}, nil
}

// do sends a request and decodes a 2xx answer into out; other answers become errors with the
// planner's message and, for a rejected spec, every problem.
func (c *plannerClient) do(ctx context.Context, method, path string, body []byte, out any, headers ...string) error {
	resp, err := c.send(ctx, method, path, body, headers...)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read the planner's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error    string `json:"error"`
			Problems []struct{ Path, Message string }
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			return fmt.Errorf("planner answered %s", resp.Status)
		}
		var b strings.Builder
		b.WriteString(e.Error)
		for _, p := range e.Problems {
			fmt.Fprintf(&b, "\n  %s: %s", p.Path, p.Message)
		}
		return errors.New(b.String())
	}
	return json.Unmarshal(data, out)
}

// send makes one request, again after the Retry-After of a 429 (the planner serves a few submits at
// once) until ctx ends.
func (c *plannerClient) send(ctx context.Context, method, path string, body []byte, headers ...string) (*http.Response, error) {
	for {
		req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token.Reveal())
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, fmt.Errorf("reach the planner at %s (SLUICE_PLANNER_URL): %w", c.base, errors.Unwrap(err))
		}
		if resp.StatusCode != http.StatusTooManyRequests {
			return resp, nil
		}
		resp.Body.Close()
		wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the planner at %s is busy (429) and %w", c.base, ctx.Err())
		case <-time.After(time.Duration(max(wait, 1)) * time.Second):
		}
	}
}

// submit sends a job spec to the planner; with --wait it shows progress until the job ends and
// exits 0 only when it succeeded.
func submit(ctx context.Context, args []string, lookup envconfig.Lookuper, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	wait := fs.Bool("wait", false, "show progress until the job ends; exit 0 only when it succeeded")
	output := fs.String("o", "table", "output format: table or json")
	key := fs.String("idempotency-key", "", "a key of the submission: submitting again with it returns the same job instead of starting another")
	if err := fs.Parse(reorder(args)); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: sluicectl submit FILE [--wait] [--idempotency-key KEY] [-o table|json]")
		return exitUsage, errUsage
	}
	spec, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return exitFailed, err
	}
	c, err := newPlannerClient(ctx, lookup)
	if err != nil {
		return exitFailed, err
	}
	var j job
	var headers []string
	if *key != "" {
		headers = []string{"Idempotency-Key", *key}
	}
	if err := c.do(ctx, http.MethodPost, "/v1/jobs", spec, &j, headers...); err != nil {
		return exitFailed, fmt.Errorf("submit %s: %w", fs.Arg(0), err)
	}
	if !*wait {
		return exitOK, printJobs(stdout, *output, []job{j})
	}
	fmt.Fprintf(stderr, "job %s: %d tasks, %s records expected\n", j.ID, j.Tasks.Planned, expected(j))
	final, err := follow(ctx, c, j.ID, stderr)
	if err != nil {
		return exitFailed, err
	}
	if err := printJobs(stdout, *output, []job{final}); err != nil {
		return exitFailed, err
	}
	if final.State != "succeeded" {
		return exitFailed, fmt.Errorf("job %s %s: %s", final.ID, final.State, final.Reason)
	}
	return exitOK, nil
}

// follow polls the job twice a second and draws a progress line until the job ends.
func follow(ctx context.Context, c *plannerClient, id string, w io.Writer) (job, error) {
	tty := isTerminal(w)
	var last string
	for {
		var j job
		if err := c.do(ctx, http.MethodGet, "/v1/jobs/"+id, nil, &j); err != nil {
			return j, err
		}
		line := progressLine(j)
		switch {
		case tty:
			fmt.Fprintf(w, "\r\033[K%s", line)
		case line != last:
			fmt.Fprintln(w, line)
		}
		last = line
		if j.State != "running" {
			if tty {
				fmt.Fprintln(w)
			}
			return j, nil
		}
		select {
		case <-ctx.Done():
			return j, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// progressLine is one line of progress: a bar over the expected records, counts and the rate.
func progressLine(j job) string {
	done := j.Records.Loaded + j.Records.DeadLettered
	bar, pct := strings.Repeat("·", 30), ""
	if j.Records.Expected > 0 {
		f := min(float64(done)/float64(j.Records.Expected), 1)
		n := int(f * 30)
		bar = strings.Repeat("█", n) + strings.Repeat("·", 30-n)
		pct = fmt.Sprintf(" %3.0f%%", f*100)
	}
	return fmt.Sprintf("[%s]%s loaded %d/%s, dead-lettered %d, tasks %d/%d (%d dead-lettered), %.0f records/s, %s",
		bar, pct, j.Records.Loaded, expected(j), j.Records.DeadLettered,
		j.Tasks.Extracted+j.Tasks.DeadLettered, j.Tasks.Planned, j.Tasks.DeadLettered, j.RecordsPerSecond, j.State)
}

func expected(j job) string {
	if j.Records.Expected < 0 {
		return "?"
	}
	return fmt.Sprint(j.Records.Expected)
}

// status shows one job.
func status(ctx context.Context, args []string, lookup envconfig.Lookuper, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	output := fs.String("o", "table", "output format: table or json")
	if err := fs.Parse(reorder(args)); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: sluicectl status JOB [-o table|json]")
		return exitUsage, errUsage
	}
	c, err := newPlannerClient(ctx, lookup)
	if err != nil {
		return exitFailed, err
	}
	var j job
	if err := c.do(ctx, http.MethodGet, "/v1/jobs/"+fs.Arg(0), nil, &j); err != nil {
		return exitFailed, err
	}
	return exitOK, printJobs(stdout, *output, []job{j})
}

// jobs lists every job the planner knows, newest first.
func jobs(ctx context.Context, args []string, lookup envconfig.Lookuper, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("jobs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	output := fs.String("o", "table", "output format: table or json")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return exitUsage, errUsage
	}
	c, err := newPlannerClient(ctx, lookup)
	if err != nil {
		return exitFailed, err
	}
	var list struct {
		Jobs []job `json:"jobs"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/jobs", nil, &list); err != nil {
		return exitFailed, err
	}
	return exitOK, printJobs(stdout, *output, list.Jobs)
}

func printJobs(w io.Writer, format string, js []job) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if len(js) == 1 {
			return enc.Encode(js[0])
		}
		return enc.Encode(js)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tSTATE\tTABLE\tTASKS\tEXPECTED\tEXTRACTED\tLOADED\tDEAD-LETTERED\tRECORDS/S\tREASON")
	for _, j := range js {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%d\t%d\t%d\t%.0f\t%s\n", j.ID, j.State, j.Table,
			j.Tasks.Extracted+j.Tasks.DeadLettered, j.Tasks.Planned, expected(j), j.Records.Extracted,
			j.Records.Loaded, j.Records.DeadLettered, j.RecordsPerSecond, j.Reason)
	}
	return tw.Flush()
}

// reorder moves flags after positional arguments to the front, so `submit FILE --wait` works.
// takesValue are the flags whose value is the next argument.
var takesValue = map[string]bool{"-o": true, "--o": true, "-idempotency-key": true, "--idempotency-key": true,
	"-pages": true, "--pages": true, "-clickhouse-version": true, "--clickhouse-version": true, "-database": true, "--database": true}

func reorder(args []string) []string {
	var flags, rest []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			flags = append(flags, a)
		} else if len(flags) > 0 && takesValue[flags[len(flags)-1]] {
			flags = append(flags, a)
		} else {
			rest = append(rest, a)
		}
	}
	return append(flags, rest...)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
