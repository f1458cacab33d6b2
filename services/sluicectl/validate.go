package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/sluicedata/sluice/pkg/jobspec"
)

// validateCmd checks a job spec offline, as the planner would at submit before it asks the source:
// every problem with its field path, and the credentials written as literals.
func (c *cli) validateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE",
		Short: "check a job spec offline: every problem with its field path; exit 1 when it has one",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			doc, err := os.ReadFile(args[0])
			if err != nil {
				return failed(err)
			}
			spec, err := jobspec.Parse(doc)
			var problems []jobspec.Problem
			var perr *jobspec.Error
			switch {
			case errors.As(err, &perr):
				problems = perr.Problems
			case err != nil:
				return failed(fmt.Errorf("%s: %w", args[0], err))
			default:
				problems = spec.CredentialProblems()
			}
			if len(problems) > 0 {
				for _, p := range problems {
					fmt.Fprintf(c.stdout, "%s: %s: %s\n", args[0], p.Path, p.Message)
				}
				return failed(fmt.Errorf("%s: %d problems", args[0], len(problems)))
			}
			kind := spec.Source.Type
			if kind == "" {
				kind = "http"
			}
			fmt.Fprintf(c.stdout, "%s: valid: job %s, %s source, %d tasks, into table %s\n", args[0], spec.Name, kind, spec.Tasks, spec.Sink.Table)
			return nil
		},
	}
}
