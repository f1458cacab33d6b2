package deploy

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestPipelineOAuth2 runs a job against a source whose OAuth2 tokens last two seconds and which
// revokes some: the extractor renews tokens on expiry and after a 401, the job loads every record
// (but the page that always fails, dead-lettered), and the client secret, read from a mounted
// secret file, is in no log line, metric, dead letter or Kafka log segment.
func TestPipelineOAuth2(t *testing.T) {
	stacktest.Require(t)
	const n = 20_000
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	secret := "sluice-test-secret-" + hex.EncodeToString(b)
	secrets := t.TempDir()
	if err := os.WriteFile(filepath.Join(secrets, "client_secret"), []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := demosource.DefaultConfig()
	src.Records, src.PageLatency, src.FailRanges = n, 20*time.Millisecond, "10000-10099"
	src.OAuthClientID, src.OAuthClientSecret, src.OAuthTokenTTL, src.OAuthRevokeEvery = "sluice", secret, 2*time.Second, 13
	p := newPipeline(t, src)
	env := p.with(map[string]string{"SLUICE_SECRET_DIRS": secrets, "SLUICE_SECRET_HOSTS": "file:" + secrets + "/client_secret=127.0.0.1",
		"SLUICE_SOURCE_ALLOW":         "127.0.0.1,127.0.0.2",
		"SLUICE_EXTRACTOR_RETRY_BASE": "10ms", "SLUICE_EXTRACTOR_RETRY_MAX": "50ms"})
	planner := start(t, "planner", env)
	extractor := start(t, "extractor", env)
	loader := start(t, "loader", env)
	api := planner.ready(t)
	extractor.ready(t)
	loader.ready(t)
	spec := func(name, url string) string {
		return fmt.Sprintf(`name: %s
source:
  type: http
  url: %s/api/users
  records_path: data
  key: id
  pagination: {type: offset, page_size: 100, total_path: total}
  max_retries: 2
  auth:
    type: oauth2_client_credentials
    token_url: %s/oauth/token
    client_id: sluice
    client_secret: "${file:%s/client_secret}"
    scopes: [users.read]
tasks: 4
sink:
  table: %s
`, name, url, p.srcURL, secrets, strings.ReplaceAll(name, "-", "_"))
	}
	j := submit(t, api, spec("oauth", p.srcURL))
	j = await(t, api, j.ID, 4*time.Minute)
	if j.State != "failed" || j.Tasks.DeadLettered != 1 || j.Tasks.Extracted != 3 {
		t.Fatalf("job ended %+v, want failed with only the task of the failing page dead-lettered", j)
	}
	st := p.source.Stats()
	if st.TokensIssued < 3 || st.Unauthorized == 0 {
		t.Fatalf("%d tokens issued and %d requests refused: the token was not renewed on expiry and after a 401", st.TokensIssued, st.Unauthorized)
	}
	if got := metric(t, extractor.addr(t), "extractor_oauth_tokens_total"); got < 2 {
		t.Fatalf("extractor_oauth_tokens_total %v", got)
	}

	// Nowhere: the services' logs and metrics, the dead letters, the broker's log segments.
	for _, s := range []*proc{planner, extractor, loader} {
		if strings.Contains(readLog(t, s), secret) {
			t.Fatalf("the client secret is in the %s log", s.name)
		}
		resp, err := http.Get(s.addr(t) + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if bytes.Contains(body, []byte(secret)) {
			t.Fatalf("the client secret is in the %s metrics", s.name)
		}
	}
	letters := p.deadLetters(t)
	if len(letters) == 0 {
		t.Fatal("no dead letter to search")
	}
	for _, dl := range letters {
		raw, _ := proto.Marshal(dl)
		if bytes.Contains(raw, []byte(secret)) {
			t.Fatalf("the client secret is in a dead letter of class %s", dl.ErrorClass)
		}
	}
	segments := 0
	err := filepath.WalkDir(filepath.Join(stackState(t), "kafka"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".log") || strings.HasSuffix(path, "kafka.log") {
			return nil
		}
		b, rerr := os.ReadFile(path)
		if rerr != nil {
			return nil
		}
		segments++
		if bytes.Contains(b, []byte(secret)) {
			return fmt.Errorf("the client secret is in the Kafka log segment %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if segments == 0 {
		t.Fatal("no Kafka log segment found to search")
	}

	// The token that secret buys goes where the secret may go: not to another host of this machine,
	// which the egress policy allows but no binding names. Refused at submit; nothing is asked of the
	// token endpoint or the other host.
	var otherAsked atomic.Int32
	other, otherConns := listenerOn(t, "127.0.0.2:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherAsked.Add(1)
		p.source.Handler().ServeHTTP(w, r)
	}))
	issued := p.source.Stats().TokensIssued
	status, body := call(t, "POST", api+"/v1/jobs", apiToken, spec("oauth-elsewhere", other.URL))
	if status != http.StatusBadRequest || !strings.Contains(body, "the OAuth2 token bought with ${file:"+secrets+"/client_secret} may not be sent to 127.0.0.2") {
		t.Fatalf("a job sending the token to a host its secret is not bound to: %d %s", status, body)
	}
	if otherConns.Load() != 0 || otherAsked.Load() != 0 || p.source.Stats().TokensIssued != issued {
		t.Fatalf("the other host got %d connections and %d requests, the token endpoint %d more tokens",
			otherConns.Load(), otherAsked.Load(), p.source.Stats().TokensIssued-issued)
	}
	t.Logf("%d tokens issued, %d requests refused, %d dead letters and %d log segments searched", st.TokensIssued, st.Unauthorized, len(letters), segments)
}
