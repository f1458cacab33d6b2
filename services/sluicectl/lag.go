package main

import (
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicedata/sluice/pkg/kafka"
)

// lagCmd prints the planner's last measure of the extractor and loader groups: per partition the
// committed and end offsets and the lag in records and seconds, like kafka-consumer-groups
// --describe, with each group's state, members and drain estimate.
func (c *cli) lagCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "lag", Short: "the extractor and loader groups' lag per partition, in records and seconds, with state, members and drain estimate", Args: cobra.NoArgs}
	out := outputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		pc, err := newPlannerClient(cmd.Context(), c.lookup)
		if err != nil {
			return failed(err)
		}
		var resp struct {
			Groups []kafka.GroupLag `json:"groups"`
		}
		if err := pc.do(cmd.Context(), http.MethodGet, "/v1/lag", nil, &resp); err != nil {
			return failed(err)
		}
		if *out != "table" {
			return encode(c.stdout, *out, resp.Groups)
		}
		return printLag(c.stdout, resp.Groups)
	}
	return cmd
}

func printLag(w io.Writer, groups []kafka.GroupLag) error {
	if len(groups) == 0 {
		_, err := fmt.Fprintln(w, "no measure yet: the planner measures the groups every SLUICE_PLANNER_LAG_INTERVAL")
		return err
	}
	for i, g := range groups {
		if i > 0 {
			fmt.Fprintln(w)
		}
		drain := "unknown (not moving)"
		if g.DrainSeconds >= 0 {
			drain = (time.Duration(g.DrainSeconds) * time.Second).String()
		}
		fmt.Fprintf(w, "GROUP %s  TOPIC %s  STATE %s  MEMBERS %d  LAG %d records, %.0f s  DRAIN %s  MEASURED %s\n", g.Group, g.Topic, g.State,
			g.Members, g.Records, g.Seconds, drain, g.MeasuredAt.Format(time.RFC3339))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PARTITION\tCOMMITTED\tEND\tLAG\tLAG-SECONDS")
		for _, p := range g.Partitions {
			committed := fmt.Sprint(p.Committed)
			if p.Committed < 0 {
				committed = "-"
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%.0f\n", p.Partition, committed, p.End, p.Records, p.Seconds)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}
