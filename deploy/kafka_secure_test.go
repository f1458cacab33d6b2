package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// ownSecureKafka starts a broker of the test's own that takes clients only over SASL_SSL and
// authorizes every request (the stack's SLUICE_KAFKA_SECURE=yes), and returns its administrator's
// settings and the directory of its users' passwords.
func ownSecureKafka(t *testing.T) (kafka.Config, string) {
	t.Helper()
	s := ownKafkaNode(t, 0, []string{"SLUICE_KAFKA_SECURE=yes"})
	users := filepath.Join(s.state, "kafka", "users")
	return kafka.Config{
		Brokers:  []string{s.addr},
		TLS:      true,
		TLSFiles: config.TLSFiles{CAFile: filepath.Join(s.state, "tls", "ca.pem")},
		SASL:     kafka.SASL{Mechanism: "SCRAM-SHA-512", Username: "admin", PasswordFile: filepath.Join(users, "admin")},
	}, users
}

// ownSecureClickHouse starts a ClickHouse server of the test's own that also serves the native
// protocol over TLS (the stack's SLUICE_CLICKHOUSE_SECURE_PORT), with a user sluice_loader whose
// password is in the returned file and who may use only database: what ClickHouse 18.16 can grant
// without SQL access control. It returns the plain and the secure address and the CA file.
func ownSecureClickHouse(t *testing.T, database string) (plain, secure, ca, password string) {
	t.Helper()
	tcp, httpPort, tlsPort := freePort(t), freePort(t), freePort(t)
	s := newPrivateStack(t, "SLUICE_CLICKHOUSE_ADDR",
		"SLUICE_KAFKA_BROKERS="+strings.Join(stacktest.Kafka(t).Brokers, ","),
		"SLUICE_CLICKHOUSE_PORT="+strconv.Itoa(tcp),
		"SLUICE_CLICKHOUSE_HTTP_PORT="+strconv.Itoa(httpPort),
		"SLUICE_CLICKHOUSE_SECURE_PORT="+strconv.Itoa(tlsPort))
	s.addr, s.pidFile = "127.0.0.1:"+strconv.Itoa(tcp), filepath.Join(s.state, "clickhouse", "clickhouse.pid")
	pass := randomToken("ch-")
	sum := sha256.Sum256([]byte(pass))
	users := filepath.Join(s.state, "clickhouse", "users.d")
	if err := os.MkdirAll(users, 0o755); err != nil {
		t.Fatal(err)
	}
	xml := fmt.Sprintf(`<yandex><users><sluice_loader>
  <password_sha256_hex>%s</password_sha256_hex>
  <networks><ip>127.0.0.1</ip></networks>
  <profile>default</profile>
  <quota>default</quota>
  <allow_databases><database>%s</database></allow_databases>
</sluice_loader></users></yandex>
`, hex.EncodeToString(sum[:]), database)
	if err := os.WriteFile(filepath.Join(users, "loader.xml"), []byte(xml), 0o644); err != nil {
		t.Fatal(err)
	}
	password = filepath.Join(t.TempDir(), "clickhouse-password")
	if err := os.WriteFile(password, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	t.Cleanup(func() { s.stop(t) })
	return s.addr, "127.0.0.1:" + strconv.Itoa(tlsPort), filepath.Join(s.state, "tls", "ca.pem"), password
}

// TestPipelineSecureKafka runs the whole pipeline against a broker that takes clients only over
// SASL_SSL with SCRAM-SHA-512 and authorizes every request: each service as its own user with
// exactly the ACLs kafka.Grants gives it (the README's), topics made by the administrator. The
// job's rows arrive exact, through ClickHouse's TLS port as a user whose password is in a file and
// who may use only the pipeline's database. A wrong password stops a service at once with an error that names the
// variables to check; a client without TLS and SASL is not served.
func TestPipelineSecureKafka(t *testing.T) {
	stacktest.Require(t)
	base, users := ownSecureKafka(t)
	k := stacktest.KafkaWith(t, base)
	k.TasksPartitions, k.RawPartitions = 6, 6
	k.CreateTopics = false

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := kafka.NewClient(k, "sluice-test-admin", stacktest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := kafka.EnsureTopics(ctx, admin, -1, k.Topics()); err != nil {
		t.Fatalf("the administrator creates the topics: %v", err)
	}

	src := demosource.DefaultConfig()
	src.Records = 20_000
	p := newPipelineOn(t, src, k)
	adm := kadm.NewClient(admin)
	groups := kafka.Groups{Extractor: p.env["SLUICE_EXTRACTOR_GROUP"], Loader: p.env["SLUICE_LOADER_GROUP"], Planner: p.env["SLUICE_PLANNER_LEASE_GROUP"]}
	for _, svc := range kafka.Services {
		grants, err := k.Grants(svc, groups)
		if err != nil {
			t.Fatal(err)
		}
		if err := kafka.Allow(ctx, adm, "User:sluice-"+svc, grants); err != nil {
			t.Fatal(err)
		}
	}
	// ClickHouse over TLS, as a user that may use only the pipeline's database, its password in a file.
	chPlain, chSecure, chCA, chPassword := ownSecureClickHouse(t, p.ch.Database)
	p.useClickHouse(t, chPlain)
	as := func(svc string, extra map[string]string) map[string]string {
		env := p.with(map[string]string{"SLUICE_KAFKA_SASL_USERNAME": "sluice-" + svc,
			"SLUICE_KAFKA_SASL_PASSWORD_FILE": filepath.Join(users, "sluice-"+svc), "SLUICE_KAFKA_CREATE_TOPICS": "false",
			"SLUICE_CLICKHOUSE_ADDR": chSecure, "SLUICE_CLICKHOUSE_TLS": "true", "SLUICE_CLICKHOUSE_TLS_CA_FILE": chCA,
			"SLUICE_CLICKHOUSE_TLS_SERVER_NAME": "localhost", "SLUICE_CLICKHOUSE_USERNAME": "sluice_loader",
			"SLUICE_CLICKHOUSE_PASSWORD": "", "SLUICE_CLICKHOUSE_PASSWORD_FILE": chPassword, "SLUICE_CLICKHOUSE_CREATE_DATABASE": "false"})
		for k, v := range extra {
			env[k] = v
		}
		return env
	}

	// A wrong password: the service stops with an error naming what to check, not retrying forever.
	wrong := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrong, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := start(t, "planner-wrong", as("planner", map[string]string{"SLUICE_KAFKA_SASL_PASSWORD_FILE": wrong}))
	select {
	case err := <-bad.done:
		bad.done <- err
		if err == nil {
			t.Fatal("the planner with a wrong password exited 0")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the planner with a wrong password still runs after 60 s")
	}
	if log := readLog(t, bad); !strings.Contains(log, "SLUICE_KAFKA_SASL_PASSWORD") || !strings.Contains(log, "SCRAM-SHA-512") || strings.Contains(log, "not-the-password") {
		t.Fatalf("the wrong password's error does not name the variables, or holds the password:\n%s", tail([]byte(log), 3000))
	}

	planner := start(t, "planner", as("planner", map[string]string{"SLUICE_PLANNER_LAG_INTERVAL": "1s"}))
	extractor := start(t, "extractor", as("extractor", nil))
	loader := start(t, "loader", as("loader", nil))
	api := planner.ready(t)
	extractor.ready(t)
	loader.ready(t)
	// land runs a job of every record of the source into table, and checks that they arrived.
	land := func(what, table string) {
		t.Helper()
		j := submit(t, api, `name: `+table+`
source:
  url: `+p.srcURL+`/api/users
  records_path: data
  key: id
  pagination: {type: offset, page_size: 500, total_path: total}
tasks: 6
sink: {table: `+table+`}
`)
		if j = await(t, api, j.ID, 4*time.Minute); j.State != "succeeded" {
			t.Fatalf("%s: the job ended %+v", what, j)
		}
		if rows, keys := p.count(t, table); keys != uint64(src.Records) || rows < keys {
			t.Fatalf("%s: %d rows, %d keys, want %d keys", what, rows, keys, src.Records)
		}
	}
	land("under each service's ACLs", "secure")

	// The planner measured both groups' lag under its ACLs.
	for _, line := range strings.Split(readLog(t, planner), "\n") {
		if strings.Contains(line, "measure a consumer group's lag") && strings.Contains(line, "AUTHORIZATION_FAILED") {
			t.Fatalf("the planner could not measure the groups' lag under its ACLs:\n%s", line)
		}
	}
	if code, out := p.sluicectl(t, api, "lag"); code != 0 || !strings.Contains(out, "GROUP "+groups.Loader) || !strings.Contains(out, "GROUP "+groups.Extractor) {
		t.Fatalf("sluicectl lag: exit %d\n%s", code, out)
	}
	if !strings.Contains(readLog(t, loader), chSecure) {
		t.Fatalf("the loader did not connect to ClickHouse's secure port %s", chSecure)
	}

	// sluicectl speaks the same settings: the administrator checks the topics with it.
	if code, out := p.sluicectl(t, api, "topics", "--check"); code != 0 {
		t.Fatalf("sluicectl topics --check over SASL_SSL: exit %d\n%s", code, out)
	}
	// The broker also takes SCRAM-SHA-256 and PLAIN (over TLS).
	for _, mech := range []string{"SCRAM-SHA-256", "PLAIN"} {
		other := k
		other.SASL.Mechanism = mech
		cl, err := kafka.NewClient(other, "sluice-test-"+mech, stacktest.Logger(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		pctx, pcancel := context.WithTimeout(context.Background(), 15*time.Second)
		err = kafka.Ping(pctx, cl)
		pcancel()
		cl.Close()
		if err != nil {
			t.Fatalf("%s: %v", mech, err)
		}
	}

	// The extractor's user loses READ on the jobs topic (the ACLs of a deployment from before
	// cancelling existed): the extractor is not ready, says what it was denied, and still extracts.
	// An extractor that starts so, and one that runs when the ACL goes, both.
	dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer dcancel()
	dels, err := adm.DeleteACLs(dctx, kadm.NewACLs().Allow("User:sluice-extractor").AllowHosts("*").
		Operations(kadm.OpRead).Topics(k.JobsTopic).ResourcePatternType(kadm.ACLPatternLiteral))
	if err != nil || len(dels) != 1 || dels[0].Err != nil || len(dels[0].Deleted) != 1 {
		t.Fatalf("take READ on %s from the extractor: %v %+v", k.JobsTopic, err, dels)
	}
	waitReadyz(t, extractor.addr(t), "a running extractor that may no longer read the jobs topic", "kafka denied User:sluice-extractor")
	extractor.stop(t, syscall.SIGTERM)
	restarted := start(t, "extractor-no-jobs-acl", as("extractor", nil))
	waitReadyz(t, restarted.addr(t), "an extractor started without READ on the jobs topic", "kafka denied User:sluice-extractor")
	land("without READ on the jobs topic", "secure_no_jobs_acl")

	// A loader run as a user without the loader's ACLs is not ready, and says what it was denied.
	denied := start(t, "loader-denied", as("extractor", nil))
	waitReadyz(t, denied.addr(t), "a loader without its ACLs", "kafka denied User:sluice-extractor")
	denied.stop(t, syscall.SIGTERM)

	// Without TLS and SASL the broker serves nothing.
	plain := k
	plain.TLS, plain.SASL = false, kafka.SASL{}
	cl, err := kafka.NewClient(plain, "sluice-test-plain", stacktest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer pcancel()
	if err := kafka.Ping(pctx, cl); err == nil {
		t.Fatal("a plaintext client without credentials was served")
	}
}

// waitReadyz waits until the service at addr is not ready for a reason that holds want.
func waitReadyz(t *testing.T, addr, what, want string) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		status, body := call(t, "GET", addr+"/readyz", "", "")
		if status == http.StatusServiceUnavailable && strings.Contains(body, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /readyz %d %s, want 503 saying %q", what, status, body, want)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
