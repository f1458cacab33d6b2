package main

import (
	"fmt"
	"net/url"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// taskView is one task of a job, as the planner's GET /v1/jobs/{id}/tasks serves it.
type taskView struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	Runs         int    `json:"runs"`
	Records      uint64 `json:"records"`
	Loaded       uint64 `json:"loaded"`
	DeadLettered uint64 `json:"dead_lettered"`
	Follows      bool   `json:"follows,omitempty"`
}

// taskPage is a page of GET /v1/jobs/{id}/tasks. All is false for a finished job, which keeps only
// its dead-lettered tasks; a job that finishes between two pages says so on the later ones.
type taskPage struct {
	Tasks      []taskView `json:"tasks"`
	All        bool       `json:"all"`
	NextCursor string     `json:"next_cursor"`
}

// tasksCmd lists a job's tasks: each with its state, runs and records.
func (c *cli) tasksCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tasks JOB", Short: "a job's tasks: state (waiting, extracting, extracted, dead_lettered), runs, records extracted, loaded and dead-lettered; of a finished job, the dead-lettered ones", Args: cobra.ExactArgs(1)}
	out := outputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		pc, err := newPlannerClient(cmd.Context(), c.lookup)
		if err != nil {
			return failed(err)
		}
		// All is false for a finished job, which keeps only its dead-lettered tasks.
		resp := struct {
			Tasks []taskView `json:"tasks"`
			All   bool       `json:"all"`
		}{Tasks: []taskView{}, All: true}
		err = eachPage(cmd.Context(), pc, "/v1/jobs/"+url.PathEscape(args[0])+"/tasks", func(p *taskPage) string {
			resp.Tasks = append(resp.Tasks, p.Tasks...)
			resp.All = resp.All && p.All
			return p.NextCursor
		})
		if err != nil {
			return failed(err)
		}
		if *out != "table" {
			return encode(c.stdout, *out, resp)
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TASK\tSTATE\tRUNS\tRECORDS\tLOADED\tDEAD-LETTERED")
		for _, t := range resp.Tasks {
			// A task's records are known when it ends: the extractor reports them then.
			records := "-"
			if t.State != "waiting" && t.State != "extracting" {
				records = strconv.FormatUint(t.Records, 10)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\n", t.ID, t.State, t.Runs, records, t.Loaded, t.DeadLettered)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if !resp.All {
			fmt.Fprintln(c.stdout, "(the job finished: only its dead-lettered tasks are listed, the others were extracted)")
		}
		return nil
	}
	return cmd
}
