// Command probe tells whether a component of the local stack answers, and which version it is:
// Kafka through a metadata and an ApiVersions request, ClickHouse through its handshake and
// SELECT version(), ZooKeeper through its srvr command. deploy/local/stack.sh builds it and waits on it.
//
//	probe [-wait 90s] [-pid FILE] kafka|clickhouse|zookeeper HOST:PORT
//
// With -wait it retries until the component answers or the time is up; with -pid it gives up as
// soon as the process in FILE has exited. It prints one line and exits 0 when the component answers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/kafka"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	wait := fs.Duration("wait", 0, "keep trying this long")
	pidFile := fs.String("pid", "", "give up when the process in this pid file has exited")
	brokers := fs.Int("brokers", 1, "kafka: answer only once the cluster has this many brokers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("usage: probe [-wait D] [-pid FILE] [-brokers N] kafka|clickhouse|zookeeper HOST:PORT")
	}
	var ask func(context.Context, string) (string, error)
	switch fs.Arg(0) {
	case "kafka":
		ask = func(ctx context.Context, addr string) (string, error) { return askKafka(ctx, addr, *brokers) }
	case "clickhouse":
		ask = askClickHouse
	case "zookeeper":
		ask = askZooKeeper
	default:
		return fmt.Errorf("unknown component %q: want kafka, clickhouse or zookeeper", fs.Arg(0))
	}

	deadline := time.Now().Add(*wait)
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		answer, err := ask(attemptCtx, fs.Arg(1))
		cancel()
		if err == nil {
			fmt.Fprintln(stdout, answer)
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		if *pidFile != "" && !running(*pidFile) {
			return fmt.Errorf("%w (the process exited)", err)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func askKafka(ctx context.Context, addr string, brokers int) (string, error) {
	// addr may list several brokers, comma-separated, as SLUICE_KAFKA_BROKERS does.
	cfg := kafka.Config{Brokers: strings.Split(addr, ","), DialTimeout: 3 * time.Second, RequestTimeout: 3 * time.Second}
	// The secure stack's admin settings, as `stack.sh env` prints them.
	if os.Getenv("SLUICE_KAFKA_TLS") == "true" {
		cfg.TLS, cfg.TLSFiles.CAFile = true, os.Getenv("SLUICE_KAFKA_TLS_CA_FILE")
	}
	cfg.SASL = kafka.SASL{Mechanism: os.Getenv("SLUICE_KAFKA_SASL_MECHANISM"), Username: os.Getenv("SLUICE_KAFKA_SASL_USERNAME"),
		Password: config.Secret(os.Getenv("SLUICE_KAFKA_SASL_PASSWORD")), PasswordFile: os.Getenv("SLUICE_KAFKA_SASL_PASSWORD_FILE")}
	cl, err := kafka.NewClient(cfg, "sluice-probe", quiet(), nil)
	if err != nil {
		return "", err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	meta, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return "", fmt.Errorf("kafka metadata request to %s: %w", addr, err)
	}
	versions, err := adm.ApiVersions(ctx)
	if err != nil {
		return "", fmt.Errorf("kafka api versions request to %s: %w", addr, err)
	}
	if len(meta.Brokers) < brokers {
		return "", fmt.Errorf("kafka at %s answers with %d of %d brokers", addr, len(meta.Brokers), brokers)
	}
	guess := "unknown"
	for _, v := range versions.Sorted() {
		if v.Err == nil {
			guess = strings.TrimPrefix(v.VersionGuess(), "v")
			break
		}
	}
	return fmt.Sprintf("Kafka %s answering (cluster %s, %d broker(s), controller %d)",
		guess, meta.Cluster, len(meta.Brokers), meta.Controller), nil
}

func askClickHouse(ctx context.Context, addr string) (string, error) {
	cfg := chconn.Config{Addr: []string{addr}, Database: "default", Username: "default",
		DialTimeout: 3 * time.Second, ReadTimeout: 5 * time.Second, MaxOpenConns: 1}
	if user := os.Getenv("SLUICE_CLICKHOUSE_USERNAME"); user != "" {
		cfg.Username = user
	}
	cfg.Password = config.Secret(os.Getenv("SLUICE_CLICKHOUSE_PASSWORD"))
	conn, err := chconn.Open(ctx, cfg, quiet())
	if err != nil {
		return "", err
	}
	defer conn.Close()
	var version string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		return "", fmt.Errorf("clickhouse SELECT version() at %s: %w", addr, err)
	}
	return fmt.Sprintf("ClickHouse %s answering", version), nil
}

// askZooKeeper sends ZooKeeper's srvr command and reads its version and mode from the answer.
func askZooKeeper(ctx context.Context, addr string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := io.WriteString(conn, "srvr"); err != nil {
		return "", fmt.Errorf("zookeeper srvr at %s: %w", addr, err)
	}
	answer, err := io.ReadAll(io.LimitReader(conn, 64<<10))
	if err != nil {
		return "", fmt.Errorf("zookeeper srvr at %s: %w", addr, err)
	}
	var version, mode string
	for line := range strings.Lines(string(answer)) {
		if v, ok := strings.CutPrefix(line, "Zookeeper version: "); ok {
			version, _, _ = strings.Cut(strings.TrimSpace(v), "-")
		}
		if m, ok := strings.CutPrefix(line, "Mode: "); ok {
			mode = strings.TrimSpace(m)
		}
	}
	if version == "" || mode == "" {
		return "", fmt.Errorf("zookeeper at %s does not serve yet: %q", addr, strings.TrimSpace(string(answer)))
	}
	return fmt.Sprintf("ZooKeeper %s answering (%s)", version, mode), nil
}

func running(pidFile string) bool {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }
