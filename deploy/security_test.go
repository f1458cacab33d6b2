package deploy

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// listenerOn serves h on addr (a loopback address other than 127.0.0.1, which the tests' policy
// allows) and counts its connections.
func listenerOn(t *testing.T, addr string, h http.Handler) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int32
	ts := httptest.NewUnstartedServer(h)
	ts.Listener.Close()
	ts.Listener = ln
	ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	ts.Start()
	t.Cleanup(ts.Close)
	return ts, &conns
}

// call sends a request to the planner with token (none when empty) and returns the status and body.
func call(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func randomToken(prefix string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// TestPlannerSecured runs a pipeline whose planner serves its API with tokens and whose sources
// pass the egress policy: no token gets 401, a read token 403 on submit, a submit token 201 and the
// job's rows; a job to a loopback listener that is not allowlisted is refused at submit and the
// listener counts no connection; a secret bound to one listener reaches no other, by the spec or
// by a redirect; a body sent a byte a second is cut off; no token or secret is in any log line.
func TestPlannerSecured(t *testing.T) {
	stacktest.Require(t)
	const n = 3000
	src := demosource.DefaultConfig()
	src.Records = n
	p := newPipeline(t, src)
	readToken, submitToken, apiKey := randomToken("read-"), randomToken("submit-"), randomToken("key-")
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("tests admin "+apiToken+"\ndash read "+readToken+"\nci submit "+submitToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The key may go to 127.0.0.1 only; sources may reach 127.0.0.1 and 127.0.0.3, not 127.0.0.2.
	env := p.with(map[string]string{"SLUICE_PLANNER_TOKENS_FILE": tokens, "SLUICE_HTTP_READ_TIMEOUT": "2s", "SLUICE_PLANNER_LAG_INTERVAL": "1s",
		"SLUICE_SOURCE_ALLOW": "127.0.0.1,127.0.0.3", "SLUICE_SECRET_HOSTS": "SOURCE_API_KEY=127.0.0.1", "SOURCE_API_KEY": apiKey})
	planner := start(t, "planner", env)
	extractor := start(t, "extractor", env)
	loader := start(t, "loader", env)
	api := planner.ready(t)
	extractor.ready(t)
	loader.ready(t)

	spec := func(name, url, auth string) string {
		return fmt.Sprintf("name: %s\nsource:\n  url: %s\n  records_path: data\n  key: id\n  pagination: {type: offset, page_size: 500, total_path: total}\n%stasks: 3\nsink: {table: %s}\n",
			name, url, auth, name)
	}
	good := spec("secured", p.srcURL+"/api/users", "")

	// Tokens and roles.
	for _, c := range []struct {
		method, path, token string
		want                int
	}{
		{"POST", "/v1/jobs", "", http.StatusUnauthorized},
		{"GET", "/v1/jobs", "", http.StatusUnauthorized},
		{"GET", "/v1/jobs", "not-a-token-of-this-planner", http.StatusUnauthorized},
		{"POST", "/v1/jobs", readToken, http.StatusForbidden},
		{"GET", "/v1/jobs", readToken, http.StatusOK},
		{"DELETE", "/v1/schedules/secured", submitToken, http.StatusForbidden},
		{"GET", "/healthz", "", http.StatusOK},
		{"GET", "/readyz", "", http.StatusOK},
		{"GET", "/metrics", "", http.StatusOK},
	} {
		body := ""
		if c.method == "POST" {
			body = good
		}
		if got, text := call(t, c.method, api+c.path, c.token, body); got != c.want {
			t.Fatalf("%s %s with token %q: %d %s, want %d", c.method, c.path, c.token, got, text, c.want)
		}
	}
	status, body := call(t, "POST", api+"/v1/jobs", submitToken, good)
	if status != http.StatusCreated {
		t.Fatalf("submit token: %d %s", status, body)
	}
	var j job
	if err := decode(body, &j); err != nil {
		t.Fatal(err)
	}
	if j = await(t, api, j.ID, 3*time.Minute); j.State != "succeeded" {
		t.Fatalf("job ended %+v", j)
	}
	if rows, keys := p.count(t, "secured"); keys != n {
		t.Fatalf("%d rows, %d keys in ClickHouse, want %d keys", rows, keys, n)
	}

	// The planner measures both groups from outside: once the job is done, nothing lags.
	var lags struct {
		Groups []struct {
			Group      string `json:"group"`
			Records    int64  `json:"lag_records"`
			Partitions []struct {
				Committed, End int64
			}
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for caughtUp := 0; caughtUp < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("GET /v1/lag did not show both groups caught up within 30 s: %s", body)
		}
		time.Sleep(200 * time.Millisecond)
		status, body = call(t, "GET", api+"/v1/lag", readToken, "")
		if status != http.StatusOK || decode(body, &lags) != nil {
			t.Fatalf("GET /v1/lag: %d %s", status, body)
		}
		caughtUp = 0
		for _, g := range lags.Groups {
			var end int64
			for _, pt := range g.Partitions {
				end += pt.End
			}
			if g.Records == 0 && end > 0 && (g.Group == env["SLUICE_EXTRACTOR_GROUP"] || g.Group == env["SLUICE_LOADER_GROUP"]) {
				caughtUp++
			}
		}
	}
	_, metrics := call(t, "GET", api+"/metrics", "", "")
	for _, want := range []string{`sluice_jobs{state="succeeded"} 1`, `sluice_consumer_group_lag_seconds{group="` + env["SLUICE_LOADER_GROUP"] + `",partition="0"`,
		`sluice_consumer_group_members{group="` + env["SLUICE_EXTRACTOR_GROUP"] + `"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("the planner's metrics lack %s", want)
		}
	}
	if code, out := p.sluicectl(t, api, "lag"); code != 0 || !strings.Contains(out, "GROUP "+env["SLUICE_LOADER_GROUP"]) || !strings.Contains(out, "PARTITION") {
		t.Fatalf("sluicectl lag: exit %d\n%s", code, out)
	}

	// Egress: 127.0.0.2 is loopback and not allowlisted.
	refused, refusedConns := listenerOn(t, "127.0.0.2:0", p.source.Handler())
	status, body = call(t, "POST", api+"/v1/jobs", submitToken, spec("refused", refused.URL+"/api/users", ""))
	if status != http.StatusBadRequest || !strings.Contains(body, "127.0.0.2 is a loopback address, which SLUICE_SOURCE_ALLOW does not allow") {
		t.Fatalf("a job to a loopback listener not allowlisted: %d %s", status, body)
	}
	if c := refusedConns.Load(); c != 0 {
		t.Fatalf("the listener the policy refuses counted %d connections", c)
	}

	// A credential written in the spec would travel in every task: refused at submit.
	literal := spec("literal", p.srcURL+"/api/users", "  headers: {Authorization: \"Bearer "+apiKey+"\"}\n")
	if status, body = call(t, "POST", api+"/v1/jobs", submitToken, literal); status != http.StatusBadRequest || !strings.Contains(body, "is a credential") {
		t.Fatalf("a literal credential header: %d %s", status, body)
	}

	// A secret bound to 127.0.0.1 goes neither to 127.0.0.3 by the spec nor there by a redirect.
	var mu sync.Mutex
	var leaked []string
	other, otherConns := listenerOn(t, "127.0.0.3:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		leaked = append(leaked, r.Header.Get("X-Api-Key"))
		mu.Unlock()
		p.source.Handler().ServeHTTP(w, r)
	}))
	withKey := "  auth: {type: api_key, name: X-Api-Key, value: \"${SOURCE_API_KEY}\"}\n"
	status, body = call(t, "POST", api+"/v1/jobs", submitToken, spec("bykey", other.URL+"/api/users", withKey))
	if status != http.StatusBadRequest || !strings.Contains(body, "${SOURCE_API_KEY} may not be sent to 127.0.0.3") {
		t.Fatalf("a job sending the key to a host it is not bound to: %d %s", status, body)
	}
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.RequestURI(), http.StatusFound)
	}))
	defer redirecting.Close()
	status, body = call(t, "POST", api+"/v1/jobs", submitToken, spec("byredirect", redirecting.URL+"/api/users", withKey))
	if status != http.StatusBadRequest || !strings.Contains(body, "refused a redirect to another host") {
		t.Fatalf("a job whose source redirects to another host: %d %s", status, body)
	}
	mu.Lock()
	if len(leaked) != 0 || otherConns.Load() != 0 {
		t.Fatalf("the other listener got %d connections, requests with keys %q", otherConns.Load(), leaked)
	}
	mu.Unlock()

	// A body sent a byte a second is cut off by SLUICE_HTTP_READ_TIMEOUT (2s).
	conn, err := net.Dial("tcp", strings.TrimPrefix(api, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/jobs HTTP/1.1\r\nHost: planner\r\nAuthorization: Bearer %s\r\nContent-Type: application/yaml\r\nContent-Length: %d\r\n\r\n", submitToken, len(good))
	began := time.Now()
	var sent atomic.Int32
	go func() {
		for i := 0; i < len(good); i++ {
			if _, err := conn.Write([]byte{good[i]}); err != nil {
				return
			}
			sent.Add(1)
			time.Sleep(time.Second)
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a slow body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || time.Since(began) > 10*time.Second {
		t.Fatalf("a slow body: %s after %s and %d bytes", resp.Status, time.Since(began), sent.Load())
	}
	t.Logf("a body sent a byte a second: %s after %s, %d of %d bytes", resp.Status, time.Since(began).Round(time.Millisecond), sent.Load(), len(good))

	for _, s := range []*proc{planner, extractor, loader} {
		log := readLog(t, s)
		for _, secret := range []string{apiToken, readToken, submitToken, apiKey} {
			if strings.Contains(log, secret) {
				t.Fatalf("a token or the key is in the %s log", s.name)
			}
		}
	}
	if !strings.Contains(readLog(t, planner), `"by":"ci"`) {
		t.Fatal("the planner does not log who submitted the job")
	}
}
