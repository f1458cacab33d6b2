// Command sluicectl is sluice's command line: it creates and checks the pipeline's topics, and with
// the planner in place submits jobs and shows their progress. It reads the same SLUICE_ variables
// as the services.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sethvargo/go-envconfig"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code, err := run(ctx, os.Args[1:], envconfig.OsLookuper(), os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sluicectl:", err)
	}
	os.Exit(code)
}
