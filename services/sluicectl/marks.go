package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// mark is an incremental job's mark, as the planner's GET /v1/marks/{name} serves it.
type mark struct {
	Name string `json:"name"`
	// Value is null once the mark was reset.
	Value *string   `json:"value"`
	Kind  string    `json:"kind,omitempty"`
	SetAt time.Time `json:"set_at"`
	JobID string    `json:"job_id,omitempty"`
	SetBy string    `json:"set_by,omitempty"`
}

// marksCmd shows a job's mark; its commands set and reset it.
func (c *cli) marksCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "marks NAME",
		Short: "show an incremental job's mark: the largest cursor of its last run that succeeded, where its next run starts (less the lookback)",
		Args:  cobra.ExactArgs(1),
	}
	c.markCall(cmd, http.MethodGet, nil)
	set := &cobra.Command{
		Use: "set NAME VALUE",
		Short: "set a job's mark by hand, back or forth, between runs (PUT /v1/marks/{name}, role admin): a time or a number of " +
			"the mark's kind, no later than the planner's clock plus SLUICE_PLANNER_MARK_MAX_SKEW",
		Args: cobra.ExactArgs(2),
	}
	c.markCall(set, http.MethodPut, func(args []string) any { return map[string]any{"value": args[1]} })
	reset := &cobra.Command{
		Use:   "reset NAME",
		Short: "clear a job's mark between runs (role admin): its next run starts from its initial_value, or reads everything",
		Args:  cobra.ExactArgs(1),
	}
	c.markCall(reset, http.MethodPut, func([]string) any { return map[string]any{"value": nil} })
	cmd.AddCommand(set, reset)
	return cmd
}

// markCall makes cmd send method to the mark of the job its first argument names, with the body
// made from its arguments, and print the mark the planner answers with.
func (c *cli) markCall(cmd *cobra.Command, method string, body func(args []string) any) {
	out := outputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		pc, err := newPlannerClient(cmd.Context(), c.lookup)
		if err != nil {
			return failed(err)
		}
		var b []byte
		if body != nil {
			if b, err = json.Marshal(body(args)); err != nil {
				return failed(err)
			}
		}
		var m mark
		if err := pc.do(cmd.Context(), method, "/v1/marks/"+url.PathEscape(args[0]), b, &m, "Content-Type", "application/json"); err != nil {
			return failed(fmt.Errorf("mark of %s: %w", args[0], err))
		}
		return printMark(c.stdout, *out, m)
	}
}

func printMark(w io.Writer, f format, m mark) error {
	if f != "table" {
		return encode(w, f, m)
	}
	value, by := "-", m.JobID
	if m.Value != nil {
		value = *m.Value
	}
	if m.SetBy != "" {
		by = m.SetBy + " (by hand)"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tMARK\tKIND\tSET AT\tSET BY")
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Name, value, dash(m.Kind), m.SetAt.UTC().Format(time.RFC3339), by)
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
