package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/sethvargo/go-envconfig"
)

// Exit codes.
const (
	exitOK       = 0
	exitFailed   = 1 // the command ran and found a problem, or could not run
	exitUsage    = 2 // the command line was wrong
	exitNotReady = 3 // a check found something missing (topics --check)
)

var errUsage = errors.New("usage")

const usage = `usage: sluicectl COMMAND [flags]

commands:
  submit FILE [--wait] [-o table|json]   submit a job spec (YAML or JSON) to the planner; with --wait,
                                         show progress and exit 0 only when the job succeeds
  status JOB [-o table|json]             show a job's progress
  jobs [-o table|json]                   list the jobs, newest first
  lag [-o table|json]                    the extractor and loader groups' lag per partition, in records
                                         and seconds, with their state, members and drain estimate
  dlq list [--job J] [--stage S] [--class C] [--limit N] [-o table|json]
                                         show the dead letters
  topics [--check] [-o table|json]       create the pipeline's missing topics, or only check them
  infer FILE [--pages N] [--clickhouse-version V] [--database D]
                                         sample the first pages of a job's source and print the typed
                                         table they call for: its CREATE TABLE and the sink columns

The planner is at SLUICE_PLANNER_URL (default http://127.0.0.1:8080), asked with the bearer token in
SLUICE_PLANNER_TOKEN (or the file SLUICE_PLANNER_TOKEN_FILE); Kafka at SLUICE_KAFKA_BROKERS.
`

// run executes one command and returns the process exit code with the error to print, if any.
func run(ctx context.Context, args []string, lookup envconfig.Lookuper, stdout, stderr io.Writer) (int, error) {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return exitUsage, nil
		}
		return exitOK, nil
	}
	var (
		code int
		err  error
	)
	switch args[0] {
	case "topics":
		code, err = topics(ctx, args[1:], lookup, stdout, stderr)
	case "submit":
		code, err = submit(ctx, args[1:], lookup, stdout, stderr)
	case "status":
		code, err = status(ctx, args[1:], lookup, stdout, stderr)
	case "jobs":
		code, err = jobs(ctx, args[1:], lookup, stdout, stderr)
	case "lag":
		code, err = lag(ctx, args[1:], lookup, stdout, stderr)
	case "dlq":
		code, err = deadLetters(ctx, args[1:], lookup, stdout, stderr)
	case "infer":
		code, err = infer(ctx, args[1:], lookup, stdout, stderr)
	default:
		fmt.Fprint(stderr, usage)
		return exitUsage, fmt.Errorf("unknown command %q", args[0])
	}
	if errors.Is(err, errUsage) {
		return exitUsage, nil
	}
	return code, err
}
