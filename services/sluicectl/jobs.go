package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sethvargo/go-envconfig"
	"github.com/spf13/cobra"

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
	// An incremental run's start and largest cursor, and the cursor values that could not count
	// towards its job's mark.
	Since          string `json:"since,omitempty"`
	MaxCursor      string `json:"max_cursor,omitempty"`
	CursorRejected *struct {
		Unparseable uint64 `json:"unparseable"`
		Future      uint64 `json:"future"`
	} `json:"cursor_rejected,omitempty"`
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
// once) or of a 503 (the planner did nothing and asks to be asked again) until ctx ends.
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
		after := resp.Header.Get("Retry-After")
		if resp.StatusCode != http.StatusTooManyRequests && (resp.StatusCode != http.StatusServiceUnavailable || after == "") {
			return resp, nil
		}
		resp.Body.Close()
		wait, _ := strconv.Atoi(after)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the planner at %s is busy (%d) and %w", c.base, resp.StatusCode, ctx.Err())
		case <-time.After(time.Duration(max(wait, 1)) * time.Second):
		}
	}
}

// submitCmd sends a job spec to the planner; with --wait it shows progress until the job ends and
// exits 0 only when it succeeded.
func (c *cli) submitCmd() *cobra.Command {
	var wait bool
	var key string
	cmd := &cobra.Command{
		Use:   "submit FILE",
		Short: "submit a job spec (YAML or JSON); with --wait, show progress and exit 0 only when the job succeeds",
		Args:  cobra.ExactArgs(1),
	}
	out := outputFlag(cmd)
	cmd.Flags().BoolVar(&wait, "wait", false, "show progress until the job ends; exit 0 only when it succeeded")
	cmd.Flags().StringVar(&key, "idempotency-key", "", "a key of the submission: submitting again with it returns the same job instead of starting another")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		spec, err := os.ReadFile(args[0])
		if err != nil {
			return failed(err)
		}
		pc, err := newPlannerClient(ctx, c.lookup)
		if err != nil {
			return failed(err)
		}
		var j job
		var headers []string
		if key != "" {
			headers = []string{"Idempotency-Key", key}
		}
		if err := pc.do(ctx, http.MethodPost, "/v1/jobs", spec, &j, headers...); err != nil {
			return failed(fmt.Errorf("submit %s: %w", args[0], err))
		}
		if !wait {
			return printJobs(c.stdout, *out, []job{j})
		}
		fmt.Fprintf(c.stderr, "job %s: %d tasks, %s records expected\n", j.ID, j.Tasks.Planned, expected(j))
		final, err := follow(ctx, pc, j.ID, c.stderr)
		if err != nil {
			return failed(err)
		}
		if err := printJobs(c.stdout, *out, []job{final}); err != nil {
			return failed(err)
		}
		if final.State != "succeeded" {
			return failed(fmt.Errorf("job %s %s: %s", final.ID, final.State, final.Reason))
		}
		return nil
	}
	return cmd
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

// statusCmd shows one job.
func (c *cli) statusCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "status JOB", Short: "show a job's progress", Args: cobra.ExactArgs(1)}
	c.jobCall(cmd, http.MethodGet, "")
	return cmd
}

// jobCall makes cmd send method to the job its argument names (path after its address) and print
// the job the planner answers with.
func (c *cli) jobCall(cmd *cobra.Command, method, path string) {
	out := outputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		pc, err := newPlannerClient(cmd.Context(), c.lookup)
		if err != nil {
			return failed(err)
		}
		var j job
		if err := pc.do(cmd.Context(), method, "/v1/jobs/"+url.PathEscape(args[0])+path, nil, &j); err != nil {
			return failed(err)
		}
		return printJobs(c.stdout, *out, []job{j})
	}
}

// jobsCmd lists every job the planner knows, newest first.
func (c *cli) jobsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "jobs", Short: "list the jobs, newest first", Args: cobra.NoArgs}
	out := outputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		pc, err := newPlannerClient(cmd.Context(), c.lookup)
		if err != nil {
			return failed(err)
		}
		var jobs []job
		err = eachPage(cmd.Context(), pc, "/v1/jobs", func(p *jobPage) string {
			jobs = append(jobs, p.Jobs...)
			return p.NextCursor
		})
		if err != nil {
			return failed(err)
		}
		return printJobs(c.stdout, *out, jobs)
	}
	cmd.AddCommand(c.cancelCmd())
	return cmd
}

// jobPage is a page of GET /v1/jobs.
type jobPage struct {
	Jobs       []job  `json:"jobs"`
	NextCursor string `json:"next_cursor"`
}

// pageLimit is how many items sluicectl asks for a page: the most the planner serves at once.
const pageLimit = 1000

// eachPage asks path for its pages in turn, from the first, and hands each to take, which returns
// the cursor of the next page it carries, until one carries none.
func eachPage[P any](ctx context.Context, c *plannerClient, path string, take func(*P) string) error {
	for cursor := ""; ; {
		q := url.Values{"limit": {strconv.Itoa(pageLimit)}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page P
		if err := c.do(ctx, http.MethodGet, path+"?"+q.Encode(), nil, &page); err != nil {
			return err
		}
		next := take(&page)
		switch {
		case next == "":
			return nil
		case next == cursor: // a planner that serves the same page again would be asked for ever
			return fmt.Errorf("the planner answered %s with the page it was asked for before", path)
		}
		cursor = next
	}
}

// cancelCmd cancels a running job: the extractors skip its tasks not yet done.
func (c *cli) cancelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cancel JOB",
		Short: "cancel a running job: the extractors skip its tasks not yet done; what they extracted before is loaded",
		Args:  cobra.ExactArgs(1),
	}
	c.jobCall(cmd, http.MethodPost, "/cancel")
	return cmd
}

func printJobs(w io.Writer, f format, js []job) error {
	if f != "table" {
		if len(js) == 1 {
			return encode(w, f, js[0])
		}
		return encode(w, f, js)
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

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
