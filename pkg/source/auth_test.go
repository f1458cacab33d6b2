package source

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/demosource"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// TestSecretsStayWhereTheyMayBeRead: ${file:…} reads files under the secret directories only, a
// symbolic link out of them included; names that are not files come from the environment.
func TestSecretsStayWhereTheyMayBeRead(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "passwd"), []byte("root"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "passwd"), filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	s := Secrets{Env: func(n string) (string, bool) { return "env-" + n, n == "SOURCE_X" }, Dirs: []string{dir}}
	for _, tt := range []struct {
		name, want string
		ok         bool
	}{
		{"file:" + filepath.Join(dir, "token"), "s3cret", true},
		{"file:" + filepath.Join(outside, "passwd"), "", false},
		{"file:" + filepath.Join(dir, "escape"), "", false},
		{"file:" + dir, "", false},
		{"file:" + filepath.Join(dir, "missing"), "", false},
		{"SOURCE_X", "env-SOURCE_X", true},
	} {
		if got, ok := s.Lookup(tt.name); got != tt.want || ok != tt.ok {
			t.Errorf("Lookup(%s) = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

// authSource is an HTTP source of the demo source with auth a and the secrets in env.
func authSource(t *testing.T, url string, a *sluicev1.Auth, env map[string]string, tokens *Tokens) Source {
	t.Helper()
	h := &sluicev1.HttpSource{Url: url + "/api/users", RecordsPath: "data", Key: "id", MaxRetries: 2, Auth: a,
		Pagination: &sluicev1.Pagination{Type: sluicev1.Pagination_TYPE_OFFSET, OffsetParam: "offset", LimitParam: "limit", PageSize: 50, TotalPath: "total"}}
	src := testSource(t, h, Env{Lookup: Secrets{Env: func(n string) (string, bool) { v, ok := env[n]; return v, ok }}.Lookup, Tokens: tokens})
	return src
}

// readAll plans and reads every slice, failing the test on any error.
func readAll(t *testing.T, src Source) int {
	t.Helper()
	plan, err := src.Plan(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, slice := range plan.Slices {
		rd, err := src.Open(slice)
		if err != nil {
			t.Fatal(err)
		}
		for rd.More() {
			read, _, err := rd.Next(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			n += len(read.Records)
		}
	}
	return n
}

// TestOAuth2TokenRenewedOnExpiryAndOn401 reads a source whose tokens last a second and that revokes
// every seventh: the token is renewed before it expires and once after each 401, and every page
// comes.
func TestOAuth2TokenRenewedOnExpiryAndOn401(t *testing.T) {
	cfg := demosource.DefaultConfig()
	cfg.Records, cfg.PageLatency = 2_000, 50*time.Millisecond
	cfg.OAuthClientID, cfg.OAuthClientSecret, cfg.OAuthTokenTTL, cfg.OAuthRevokeEvery = "sluice", "the-client-secret", time.Second, 7
	srv, err := demosource.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	tokens := &Tokens{Client: &http.Client{}, Now: time.Now}
	a := &sluicev1.Auth{Type: sluicev1.Auth_TYPE_OAUTH2_CLIENT_CREDENTIALS, TokenUrl: ts.URL + "/oauth/token",
		ClientId: "sluice", ClientSecret: "${SOURCE_SECRET}", Scopes: []string{"read"}}
	src := authSource(t, ts.URL, a, map[string]string{"SOURCE_SECRET": "the-client-secret"}, tokens)
	if n := readAll(t, src); n != 2_000 {
		t.Fatalf("%d records, want 2000", n)
	}
	st := srv.Stats()
	revoked := st.PagesServed / 6 // every seventh authorized request
	if st.TokensIssued < 3+revoked/2 || st.Unauthorized == 0 {
		t.Fatalf("%d tokens issued and %d requests refused over %d pages: want renewals on expiry and after 401s", st.TokensIssued, st.Unauthorized, st.PagesServed)
	}
	// A wrong secret fails as auth, saying nothing of the secret.
	bad := authSource(t, ts.URL, a, map[string]string{"SOURCE_SECRET": "not-the-secret"}, &Tokens{Client: &http.Client{}, Now: time.Now})
	_, err = bad.Plan(context.Background(), 1)
	if e := AsError(err, ""); e.Class != "auth" || strings.Contains(err.Error(), "secret") {
		t.Fatalf("a wrong client secret: %v (class %q)", err, e.Class)
	}
}

// TestAPIKeyAndBasic send their credentials where the spec says.
func TestAPIKeyAndBasic(t *testing.T) {
	cfg := demosource.DefaultConfig()
	cfg.Records, cfg.APIKey = 300, "k-123"
	srv, err := demosource.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	env := map[string]string{"SOURCE_KEY": "k-123"}
	for _, a := range []*sluicev1.Auth{
		{Type: sluicev1.Auth_TYPE_API_KEY, Name: "X-Api-Key", Value: "${SOURCE_KEY}"},
		{Type: sluicev1.Auth_TYPE_API_KEY, InQuery: true, Name: "api_key", Value: "${SOURCE_KEY}"},
	} {
		if n := readAll(t, authSource(t, ts.URL, a, env, nil)); n != 300 {
			t.Fatalf("%v: %d records", a, n)
		}
	}
	var got string
	basic := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, _ := r.BasicAuth()
		got = u + ":" + p
		_, _ = w.Write([]byte(`{"data":[],"total":0}`))
	}))
	defer basic.Close()
	src := authSource(t, basic.URL, &sluicev1.Auth{Type: sluicev1.Auth_TYPE_BASIC, Username: "reader", Password: "${SOURCE_PW}"},
		map[string]string{"SOURCE_PW": "pw:with:colons"}, nil)
	readAll(t, src)
	if got != "reader:pw:with:colons" {
		t.Fatalf("basic credentials %q", got)
	}
}

// TestAPIKeyInQueryStaysOutOfTheCrawl: a source that echoes the api_key in its next links gets the
// key on every request, and the next page's task carries the link without it.
func TestAPIKeyInQueryStaysOutOfTheCrawl(t *testing.T) {
	cfg := demosource.DefaultConfig()
	cfg.Records, cfg.APIKey = 250, "k-456"
	srv, err := demosource.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	h := &sluicev1.HttpSource{Url: ts.URL + "/next/users", RecordsPath: "data", Key: "id", MaxRetries: 1,
		Auth:       &sluicev1.Auth{Type: sluicev1.Auth_TYPE_API_KEY, InQuery: true, Name: "api_key", Value: "${SOURCE_KEY}"},
		Pagination: &sluicev1.Pagination{Type: sluicev1.Pagination_TYPE_NEXT_URL, NextUrlPath: "links.next", LimitParam: "limit", PageSize: 100}}
	src := testSource(t, h, Env{Lookup: func(n string) (string, bool) { return "k-456", n == "SOURCE_KEY" }})
	task := &sluicev1.Task{TaskId: "k-t0000", Slice: &sluicev1.Task_Crawl{Crawl: &sluicev1.Crawl{}}}
	records := 0
	for task != nil {
		rd, err := src.Open(task)
		if err != nil {
			t.Fatal(err)
		}
		for rd.More() {
			read, _, err := rd.Next(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			records += len(read.Records)
		}
		if task = rd.Then(); task != nil && strings.Contains(task.GetCrawl().Position, "k-456") {
			t.Fatalf("the next page's task carries the key: %s", task.GetCrawl().Position)
		}
	}
	if records != 250 {
		t.Fatalf("%d records, want 250", records)
	}
}

// TestSecretsBoundToHosts: with SLUICE_SECRET_HOSTS a secret goes only to the hosts it is bound
// to; a job that points it elsewhere fails as config, naming the reference, not the value.
func TestSecretsBoundToHosts(t *testing.T) {
	hosts, err := ParseSecretHosts("SOURCE_KEY=127.0.0.1|*.example.com,file:/run/secrets/sluice/x=auth.example.com,SOURCE_ANY=*")
	if err != nil || len(hosts) != 3 || len(hosts["SOURCE_KEY"]) != 2 {
		t.Fatalf("ParseSecretHosts: %v, %v", hosts, err)
	}
	s := Secrets{Hosts: hosts}
	for _, tt := range []struct {
		name, host string
		ok         bool
	}{
		{"SOURCE_KEY", "127.0.0.1:8081", true}, {"SOURCE_KEY", "api.example.com", true}, {"SOURCE_KEY", "example.com", false},
		{"SOURCE_KEY", "evil.test", false}, {"SOURCE_OTHER", "127.0.0.1", false}, {"file:/run/secrets/sluice/x", "AUTH.example.com:443", true},
		{"SOURCE_ANY", "anything.example", true}, {"SOURCE_ANY", "[::1]:80", true},
	} {
		if got := s.Allowed(tt.name, tt.host); got != tt.ok {
			t.Errorf("Allowed(%s, %s) = %v, want %v", tt.name, tt.host, got, tt.ok)
		}
	}
	if _, err := ParseSecretHosts("SOURCE_KEY"); err == nil {
		t.Fatal("an entry without hosts was taken")
	}
	if (Secrets{}).Allowed("SOURCE_KEY", "127.0.0.1") {
		t.Fatal("a secret bound to no host may go to one")
	}

	cfg := demosource.DefaultConfig()
	cfg.Records, cfg.APIKey = 100, "k-789"
	srv, err := demosource.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	for _, tt := range []struct {
		bound []string
		ok    bool
	}{{[]string{"127.0.0.1"}, true}, {[]string{"api.example.com"}, false}} {
		sec := Secrets{Env: func(n string) (string, bool) { return "k-789", n == "SOURCE_KEY" }, Hosts: map[string][]string{"SOURCE_KEY": tt.bound}}
		h := &sluicev1.HttpSource{Url: ts.URL + "/api/users", RecordsPath: "data", Key: "id",
			Auth:       &sluicev1.Auth{Type: sluicev1.Auth_TYPE_API_KEY, Name: "X-Api-Key", Value: "${SOURCE_KEY}"},
			Pagination: &sluicev1.Pagination{Type: sluicev1.Pagination_TYPE_OFFSET, OffsetParam: "offset", LimitParam: "limit", PageSize: 50, TotalPath: "total"}}
		src := testSource(t, h, Env{Lookup: sec.Lookup, Allowed: sec.Allowed})
		_, err = src.Plan(context.Background(), 1)
		e := AsError(err, "")
		switch {
		case tt.ok && err != nil:
			t.Fatalf("bound to %v: %v", tt.bound, err)
		case !tt.ok && (e.Class != "config" || !strings.Contains(err.Error(), "${SOURCE_KEY} may not be sent to 127.0.0.1") || !strings.Contains(err.Error(), "SLUICE_SECRET_HOSTS does not bind it") || strings.Contains(err.Error(), "k-789")):
			t.Fatalf("bound to %v: %v (class %q)", tt.bound, err, e.Class)
		}
	}
}

// TestOAuth2TokenBoundLikeItsSecret: the token a client secret buys goes only where the secret, or
// a token: binding of it, may go. A source on another host is refused before anything is asked of
// the token endpoint or the source, by the planner's Plan and by an extractor's Open alike.
func TestOAuth2TokenBoundLikeItsSecret(t *testing.T) {
	cfg := demosource.DefaultConfig()
	cfg.Records = 120
	cfg.OAuthClientID, cfg.OAuthClientSecret, cfg.OAuthTokenTTL = "sluice", "the-client-secret", time.Minute
	srv, err := demosource.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int64
	handler := srv.Handler()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		handler.ServeHTTP(w, r)
	}))
	defer ts.Close()
	// The token endpoint by one name of this machine, the source by another.
	u, _ := url.Parse(ts.URL)
	tokenURL := "http://localhost:" + u.Port() + "/oauth/token"
	for _, tt := range []struct {
		name, bindings string
		ok             bool
	}{
		{"the secret bound to the token endpoint only", "SOURCE_SECRET=localhost", false},
		{"the token bound elsewhere", "SOURCE_SECRET=localhost,token:SOURCE_SECRET=api.example.com", false},
		{"a token: binding of another secret", "SOURCE_SECRET=localhost,token:SOURCE_OTHER=127.0.0.1", false},
		{"the token bound to the source", "SOURCE_SECRET=localhost,token:SOURCE_SECRET=127.0.0.1", true},
		{"the secret bound to both", "SOURCE_SECRET=localhost|127.0.0.1", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hosts, err := ParseSecretHosts(tt.bindings)
			if err != nil {
				t.Fatal(err)
			}
			sec := Secrets{Env: func(n string) (string, bool) { return "the-client-secret", n == "SOURCE_SECRET" }, Hosts: hosts}
			h := &sluicev1.HttpSource{Url: ts.URL + "/api/users", RecordsPath: "data", Key: "id", MaxRetries: 1,
				Auth: &sluicev1.Auth{Type: sluicev1.Auth_TYPE_OAUTH2_CLIENT_CREDENTIALS, TokenUrl: tokenURL,
					ClientId: "sluice", ClientSecret: "${SOURCE_SECRET}"},
				Pagination: &sluicev1.Pagination{Type: sluicev1.Pagination_TYPE_OFFSET, OffsetParam: "offset", LimitParam: "limit", PageSize: 50}}
			src := testSource(t, h, Env{Lookup: sec.Lookup, Allowed: sec.Allowed, Tokens: &Tokens{Client: &http.Client{}, Now: time.Now}})
			before := asked.Load()
			if tt.ok {
				if n := readAll(t, src); n != 120 {
					t.Fatalf("%d records, want 120", n)
				}
				return
			}
			_, err = src.Plan(context.Background(), 1)
			if e := AsError(err, ""); e.Class != "config" || !strings.Contains(err.Error(), "the OAuth2 token bought with ${SOURCE_SECRET} may not be sent to 127.0.0.1") {
				t.Fatalf("Plan: %v (class %q)", err, e.Class)
			}
			task := &sluicev1.Task{Slice: &sluicev1.Task_Offsets{Offsets: &sluicev1.OffsetRange{Unbounded: true}}}
			if _, err := src.Open(task); AsError(err, "").Class != "config" {
				t.Fatalf("Open: %v", err)
			}
			if n := asked.Load() - before; n != 0 {
				t.Fatalf("%d requests made for a refused source", n)
			}
		})
	}
}
