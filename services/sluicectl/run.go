package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/sethvargo/go-envconfig"
	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK       = 0
	exitFailed   = 1 // the command ran and found a problem, or could not run
	exitUsage    = 2 // the command line was wrong
	exitNotReady = 3 // a check found something missing (topics --check)
)

// exitError is an error with the exit code it ends the command with.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// failed ends a command with exit 1 and err.
func failed(err error) error { return &exitError{code: exitFailed, err: err} }

// cli is what every command gets: the variables it reads and where it writes. code is the exit code
// of a command that ends without an error but not with 0 (topics --check finding a topic missing).
type cli struct {
	lookup         envconfig.Lookuper
	stdout, stderr io.Writer
	code           int
}

const about = `sluicectl submits jobs to sluice's planner and shows them, their lag and their dead letters,
and creates and checks the pipeline's topics.

The planner is at SLUICE_PLANNER_URL (default http://127.0.0.1:8080), asked with the bearer token in
SLUICE_PLANNER_TOKEN (or the file SLUICE_PLANNER_TOKEN_FILE); Kafka at SLUICE_KAFKA_BROKERS, with the
same SLUICE_KAFKA_ variables as the services (TLS and SASL included).

Exit codes: 0 done, 1 failed (or the job did not succeed), 2 usage, 3 a check found something missing.`

// newRoot builds the command tree.
func newRoot(c *cli) *cobra.Command {
	root := &cobra.Command{
		Use:           "sluicectl",
		Short:         "sluice's command line",
		Long:          about,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SetOut(c.stderr)
			_ = cmd.Help()
			return &exitError{code: exitUsage, err: errors.New("a command is needed")}
		},
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	dlq := &cobra.Command{Use: "dlq", Short: "the dead letters", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SetOut(c.stderr)
			_ = cmd.Help()
			return &exitError{code: exitUsage, err: errors.New("dlq needs a command: list, show or replay")}
		}}
	dlq.AddCommand(c.dlqListCmd(), c.dlqShowCmd(), c.dlqReplayCmd())
	root.AddCommand(c.submitCmd(), c.statusCmd(), c.jobsCmd(), c.tasksCmd(), c.marksCmd(), c.lagCmd(), dlq, c.topicsCmd(), c.inferCmd(),
		c.validateCmd(), c.versionCmd())
	return root
}

// run executes one command line and returns the process exit code with the error to print, if any:
// help exits 0, a wrong command line 2 with the usage.
func run(ctx context.Context, args []string, lookup envconfig.Lookuper, stdout, stderr io.Writer) (int, error) {
	c := &cli{lookup: lookup, stdout: stdout, stderr: stderr}
	root := newRoot(c)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		if ee.code == exitUsage {
			return exitUsage, ee.err // said after the usage, when a command printed it
		}
		return ee.code, ee.err
	case err != nil:
		// cobra's own: an unknown command or flag, a wrong number of arguments.
		fmt.Fprintln(stderr, cmd.UsageString())
		return exitUsage, err
	}
	return c.code, nil
}
