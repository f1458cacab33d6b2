package stacktest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/kafka"
)

// Require skips t unless integration tests are switched on with SLUICE_INTEGRATION=1, as `make test`
// does after starting the stack.
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv("SLUICE_INTEGRATION") != "1" {
		t.Skip("integration test: run `make test`, or start the stack and set SLUICE_INTEGRATION=1")
	}
}

// Name returns a name unique to this run of t, made of t's name and random hex, usable as a Kafka
// topic, a consumer group or a ClickHouse identifier.
func Name(t testing.TB, prefix string) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := strings.ToLower(nonIdent.ReplaceAllString(t.Name(), "_"))
	if len(name) > 40 {
		name = name[:40]
	}
	return prefix + "_" + name + "_" + hex.EncodeToString(b)
}

var nonIdent = regexp.MustCompile(`[^a-zA-Z0-9_]+`)

// Kafka returns the configuration of the stack's broker, with topic names unique to t, after
// checking that the broker answers.
func Kafka(t testing.TB) kafka.Config {
	t.Helper()
	return KafkaAt(t, strings.Split(env("SLUICE_KAFKA_BROKERS", "127.0.0.1:9092"), ",")...)
}

// KafkaAt is Kafka for other brokers: a cluster that the test started for itself.
func KafkaAt(t testing.TB, brokers ...string) kafka.Config {
	t.Helper()
	return KafkaWith(t, kafka.Config{Brokers: brokers})
}

// KafkaWith is KafkaAt for the brokers, TLS and SASL settings of base, such as an administrator
// of a secured broker.
func KafkaWith(t testing.TB, base kafka.Config) kafka.Config {
	t.Helper()
	Require(t)
	cfg := kafka.Config{
		Brokers:           base.Brokers,
		TLS:               base.TLS,
		TLSFiles:          base.TLSFiles,
		SASL:              base.SASL,
		DialTimeout:       5 * time.Second,
		RequestTimeout:    10 * time.Second,
		SessionTimeout:    10 * time.Second,
		RebalanceTimeout:  60 * time.Second,
		CreateTopics:      true,
		ReplicationFactor: -1,
		TasksTopic:        Name(t, "tasks"),
		TasksPartitions:   4,
		RawTopic:          Name(t, "raw"),
		RawPartitions:     4,
		DLQTopic:          Name(t, "dlq"),
		DLQPartitions:     2,
		EventsTopic:       Name(t, "events"),
		EventsPartitions:  2,
		JobsTopic:         Name(t, "jobs"),
		JobsPartitions:    1,
		SchemasTopic:      Name(t, "schemas"),
		SchemasPartitions: 1,
		LeaseTopic:        Name(t, "lease"),
	}
	cl, err := kafka.NewClient(cfg, "stacktest", Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := kafka.Ping(ctx, cl); err != nil {
		t.Fatalf("the stack's Kafka at %v does not answer (make up): %v", cfg.Brokers, err)
	}
	t.Cleanup(func() { deleteTopics(t, cfg) })
	return cfg
}

// deleteTopics removes t's topics, so that repeated runs do not fill the broker.
func deleteTopics(t testing.TB, cfg kafka.Config) {
	cl, err := kafka.NewClient(cfg, "stacktest", Logger(t), nil)
	if err != nil {
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names := make([]string, 0, 4)
	for _, s := range cfg.Topics() {
		names = append(names, s.Name)
	}
	_, _ = kadm.NewClient(cl).DeleteTopics(ctx, names...)
}

// ClickHouse returns the configuration of the stack's ClickHouse with a database of t's own, which
// is created on first connection and dropped when t ends.
func ClickHouse(t testing.TB) chconn.Config {
	t.Helper()
	Require(t)
	cfg := chconn.Config{
		Addr:           []string{ClickHouseAddr()},
		Database:       Name(t, "test"),
		CreateDatabase: true,
		Username:       env("SLUICE_CLICKHOUSE_USERNAME", "default"),
		Password:       config.Secret(os.Getenv("SLUICE_CLICKHOUSE_PASSWORD")),
		DialTimeout:    5 * time.Second,
		ReadTimeout:    30 * time.Second,
		MaxOpenConns:   4,
	}
	dropAtEnd(t, cfg, "")
	return cfg
}

// dropAtEnd drops cfg's database when t ends (ON CLUSTER cluster, when given).
func dropAtEnd(t testing.TB, cfg chconn.Config, cluster string) {
	t.Cleanup(func() {
		admin := cfg
		admin.Database = "default"
		admin.ReadTimeout = 5 * time.Minute
		// Dropping millions of rows (F13's six million) waits for ClickHouse 18.16's merges of them.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		conn, err := chconn.Open(ctx, admin, Logger(t))
		if err != nil {
			t.Errorf("drop test database: %v", err)
			return
		}
		defer conn.Close()
		sql := "DROP DATABASE IF EXISTS `" + cfg.Database + "`"
		if cluster != "" {
			sql += " ON CLUSTER `" + cluster + "`"
		}
		switch err := conn.Exec(ctx, sql); {
		case errors.Is(err, context.DeadlineExceeded):
			// The server goes on with the drop; the test's outcome was decided before it.
			t.Logf("drop test database %s: still running after 5 minutes", cfg.Database)
		case err != nil:
			t.Errorf("drop test database: %v", err)
		}
	})
}

// ClusterName is the cluster the stack starts with SLUICE_STACK_CLICKHOUSE=cluster.
const ClusterName = "sluice"

// ClickHouseCluster returns the configuration of the stack's ClickHouse cluster (`make up
// CLICKHOUSE=cluster`; `make test` starts it), with a database unique to t made on every node and
// dropped from every node when t ends. It fails t when the cluster is not up. Tests of several
// packages share the cluster; ClickHouseClusterAlone keeps them off it while t breaks a part.
func ClickHouseCluster(t testing.TB) chconn.Config { return clickHouseCluster(t, syscall.LOCK_SH) }

// ClickHouseClusterAlone is ClickHouseCluster for a test that kills or stops parts of the cluster:
// it waits until no other test (of any package) uses the cluster, and keeps them waiting until t
// ends.
func ClickHouseClusterAlone(t testing.TB) chconn.Config { return clickHouseCluster(t, syscall.LOCK_EX) }

func clickHouseCluster(t testing.TB, how int) chconn.Config {
	t.Helper()
	Require(t)
	addrs := os.Getenv("SLUICE_STACK_CLUSTER_ADDR")
	if addrs == "" {
		t.Fatal("the stack's ClickHouse cluster is not up: start it with `make up CLICKHOUSE=cluster` and export `deploy/local/stack.sh env`")
	}
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "sluice-cluster-"+nonIdent.ReplaceAllString(addrs, "_")+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), how); err != nil {
		t.Fatalf("lock the stack's cluster: %v", err)
	}
	t.Cleanup(func() { lock.Close() }) // after the database is dropped: cleanups run last first
	cfg := chconn.Config{
		Addr:         strings.Split(addrs, ","),
		Database:     Name(t, "test"),
		Username:     env("SLUICE_CLICKHOUSE_USERNAME", "default"),
		Password:     config.Secret(os.Getenv("SLUICE_CLICKHOUSE_PASSWORD")),
		DialTimeout:  5 * time.Second,
		ReadTimeout:  60 * time.Second,
		MaxOpenConns: 4,
		Compression:  "auto",
		Cluster:      ClusterName,
	}
	admin := cfg
	admin.Database = "default"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := chconn.Open(ctx, admin, Logger(t))
	if err != nil {
		t.Fatalf("connect to the stack's cluster: %v", err)
	}
	defer conn.Close()
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS `"+cfg.Database+"` ON CLUSTER `"+ClusterName+"`"); err != nil {
		t.Fatalf("create the test database on the cluster: %v", err)
	}
	dropAtEnd(t, cfg, ClusterName)
	return cfg
}

// ClickHouseAddr is the native-protocol address of the stack's ClickHouse.
func ClickHouseAddr() string { return env("SLUICE_CLICKHOUSE_ADDR", "127.0.0.1:9000") }

// Logger returns a logger that writes through t.Log, so that output shows only for failing tests.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// Env returns the SLUICE_ variables that point a service at the configurations, for run functions
// that take an envconfig.Lookuper.
func Env(k kafka.Config, ch *chconn.Config) map[string]string {
	env := map[string]string{
		"SLUICE_KAFKA_BROKERS":            strings.Join(k.Brokers, ","),
		"SLUICE_KAFKA_TASKS_TOPIC":        k.TasksTopic,
		"SLUICE_KAFKA_TASKS_PARTITIONS":   strconv.Itoa(k.TasksPartitions),
		"SLUICE_KAFKA_RAW_TOPIC":          k.RawTopic,
		"SLUICE_KAFKA_RAW_PARTITIONS":     strconv.Itoa(k.RawPartitions),
		"SLUICE_KAFKA_DLQ_TOPIC":          k.DLQTopic,
		"SLUICE_KAFKA_DLQ_PARTITIONS":     strconv.Itoa(k.DLQPartitions),
		"SLUICE_KAFKA_EVENTS_TOPIC":       k.EventsTopic,
		"SLUICE_KAFKA_EVENTS_PARTITIONS":  strconv.Itoa(k.EventsPartitions),
		"SLUICE_KAFKA_JOBS_TOPIC":         k.JobsTopic,
		"SLUICE_KAFKA_JOBS_PARTITIONS":    strconv.Itoa(k.JobsPartitions),
		"SLUICE_KAFKA_SCHEMAS_TOPIC":      k.SchemasTopic,
		"SLUICE_KAFKA_SCHEMAS_PARTITIONS": strconv.Itoa(k.SchemasPartitions),
		"SLUICE_KAFKA_LEASE_TOPIC":        k.LeaseTopic,
		// The planners' lease group: the deployment's own, named like its lease topic.
		"SLUICE_PLANNER_LEASE_GROUP":      k.LeaseTopic,
		"SLUICE_KAFKA_CREATE_TOPICS":      strconv.FormatBool(k.CreateTopics),
		"SLUICE_KAFKA_REPLICATION_FACTOR": strconv.Itoa(k.ReplicationFactor),
		"SLUICE_KAFKA_SESSION_TIMEOUT":    k.SessionTimeout.String(),
		"SLUICE_KAFKA_REBALANCE_TIMEOUT":  k.RebalanceTimeout.String(),
		// The tests' sources run on this machine, which sources may not reach by default.
		"SLUICE_SOURCE_ALLOW": "127.0.0.1,::1",
	}
	if k.TLS {
		env["SLUICE_KAFKA_TLS"] = "true"
		env["SLUICE_KAFKA_TLS_CA_FILE"] = k.TLSFiles.CAFile
	}
	if k.SASL.Mechanism != "" {
		env["SLUICE_KAFKA_SASL_MECHANISM"] = k.SASL.Mechanism
		env["SLUICE_KAFKA_SASL_USERNAME"] = k.SASL.Username
		env["SLUICE_KAFKA_SASL_PASSWORD_FILE"] = k.SASL.PasswordFile
	}
	if ch != nil {
		env["SLUICE_CLICKHOUSE_ADDR"] = strings.Join(ch.Addr, ",")
		env["SLUICE_CLICKHOUSE_DATABASE"] = ch.Database
		env["SLUICE_CLICKHOUSE_USERNAME"] = ch.Username
		env["SLUICE_CLICKHOUSE_PASSWORD"] = ch.Password.Reveal()
		if ch.Cluster != "" {
			env["SLUICE_CLICKHOUSE_CLUSTER"] = ch.Cluster
			env["SLUICE_CLICKHOUSE_INSERT_QUORUM"] = strconv.Itoa(ch.InsertQuorum)
		}
	}
	return env
}

// LogWriter collects a service's JSON log lines so that a test can wait for one.
type LogWriter struct {
	mu    sync.Mutex
	lines []map[string]any
	buf   []byte
}

// Write takes whole or partial lines.
func (w *LogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		var line map[string]any
		if err := json.Unmarshal(w.buf[:i], &line); err != nil {
			line = map[string]any{"msg": "not json: " + string(w.buf[:i])}
		}
		w.lines = append(w.lines, line)
		w.buf = w.buf[i+1:]
	}
}

// Await returns the first line whose msg is msg, waiting up to timeout for it.
func (w *LogWriter) Await(t testing.TB, msg string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		for _, l := range w.lines {
			if l["msg"] == msg {
				w.mu.Unlock()
				return l
			}
		}
		w.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no log line %q within %s; lines: %v", msg, timeout, w.Lines())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Lines returns the lines collected so far.
func (w *LogWriter) Lines() []map[string]any {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.lines)
}

// AwaitStop cancels a service's run, started in a goroutine that sends its result on done, and
// checks that it returns nil within timeout after logging "service stopped".
func AwaitStop(t testing.TB, cancel context.CancelFunc, done <-chan error, logs *LogWriter, timeout time.Duration) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(timeout):
		t.Fatalf("run did not return within %s of cancel", timeout)
	}
	logs.Await(t, "service stopped", time.Second)
}

// Postgres returns the connection string of a database of t's own on the stack's PostgreSQL
// (SLUICE_POSTGRES_DSN, which `make test` sets), created now and dropped when t ends. t is skipped
// when no PostgreSQL is configured outside `make test`, and fails within it.
func Postgres(t testing.TB) string {
	t.Helper()
	Require(t)
	admin := os.Getenv("SLUICE_POSTGRES_DSN")
	if admin == "" {
		t.Fatal("SLUICE_POSTGRES_DSN is not set: start PostgreSQL with `make up POSTGRES=yes` and eval \"$(deploy/local/stack.sh env)\"")
	}
	cfg, err := pgx.ParseConfig(admin)
	if err != nil {
		t.Fatalf("SLUICE_POSTGRES_DSN does not parse: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	name := Name(t, "test")
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Errorf("drop test database: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database: %v", err)
		}
	})
	return withDatabase(admin, name)
}

// withDatabase is the connection string dsn for the database name instead of its own.
func withDatabase(dsn, name string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + name
		return u.String()
	}
	return dsn + " dbname=" + name // in key=value form the last value counts
}
