package main

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	readToken   = "read-token-0123456789"
	submitToken = "submit-token-0123456789"
	adminToken  = "admin-token-0123456789"
)

// authRig serves the jobs API's routes with handlers that only answer 200, behind tokens from a file.
func authRig(t *testing.T) (*httptest.Server, string, *bytes.Buffer, *tokensFile) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	body := "# planner tokens\n\ndash read " + readToken + "\nci submit " + submitToken + "\nops admin " + adminToken + "\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	tokens, err := openTokens(path, log)
	if err != nil {
		t.Fatal(err)
	}
	a := &authorizer{tokens: tokens}
	mux := http.NewServeMux()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Info("served", "by", who(r.Context()))
		w.WriteHeader(http.StatusOK)
	})
	mux.Handle("GET /v1/jobs", a.require(roleRead, ok))
	mux.Handle("POST /v1/jobs", a.require(roleSubmit, ok))
	mux.Handle("DELETE /v1/schedules/{name}", a.require(roleAdmin, ok))
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts, path, &logs, tokens
}

func call(t *testing.T, method, url, authorization string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestAuthRoles answers 401 without a valid token, 403 to a role that may not, and serves each
// role what it and the roles below it may do; no token reaches the log.
func TestAuthRoles(t *testing.T) {
	ts, _, logs, _ := authRig(t)
	for _, c := range []struct {
		method, path, auth string
		want               int
	}{
		{"GET", "/v1/jobs", "", http.StatusUnauthorized},
		{"GET", "/v1/jobs", "Basic " + readToken, http.StatusUnauthorized},
		{"GET", "/v1/jobs", "Bearer not-a-token-of-this-planner", http.StatusUnauthorized},
		{"GET", "/v1/jobs", "Bearer " + readToken[:len(readToken)-1], http.StatusUnauthorized},
		{"GET", "/v1/jobs", "Bearer " + readToken, http.StatusOK},
		{"GET", "/v1/jobs", "bearer " + submitToken, http.StatusOK},
		{"POST", "/v1/jobs", "Bearer " + readToken, http.StatusForbidden},
		{"POST", "/v1/jobs", "Bearer " + submitToken, http.StatusOK},
		{"POST", "/v1/jobs", "Bearer " + adminToken, http.StatusOK},
		{"DELETE", "/v1/schedules/x", "Bearer " + submitToken, http.StatusForbidden},
		{"DELETE", "/v1/schedules/x", "Bearer " + adminToken, http.StatusOK},
	} {
		resp := call(t, c.method, ts.URL+c.path, c.auth)
		if resp.StatusCode != c.want {
			t.Errorf("%s %s with %q: %d, want %d", c.method, c.path, c.auth, resp.StatusCode, c.want)
		}
		if c.want == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s %s with %q: 401 without WWW-Authenticate: Bearer", c.method, c.path, c.auth)
		}
	}
	for _, token := range []string{readToken, submitToken, adminToken} {
		if strings.Contains(logs.String(), token) {
			t.Fatalf("a token is in the log:\n%s", logs.String())
		}
	}
	if !strings.Contains(logs.String(), `"by":"ci"`) {
		t.Fatalf("the log does not name the token's owner:\n%s", logs.String())
	}
}

// TestAuthReload takes a rotated tokens file, keeps the tokens it had when the file breaks, and
// revokes every token when the file is emptied or removed.
func TestAuthReload(t *testing.T) {
	ts, path, logs, tokens := authRig(t)
	now := time.Now()
	tokens.now = func() time.Time { return now }
	const rotated = "rotated-token-0123456789"
	for i, step := range []struct {
		what    string
		content string // "" removes the file
		token   string
		want    int
	}{
		{"the rotated token", "ci submit " + rotated + "\n", rotated, http.StatusOK},
		{"a token removed from the file", "ci submit " + rotated + "\n", readToken, http.StatusUnauthorized},
		{"after the file broke, the token read before", "ci superuser " + rotated + "\n", rotated, http.StatusOK},
		{"after the file was emptied", "# none\n", rotated, http.StatusUnauthorized},
		{"written again", "ci submit " + rotated + "\n", rotated, http.StatusOK},
		{"after the file was removed", "", rotated, http.StatusUnauthorized},
	} {
		if step.content == "" {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		} else {
			if err := os.WriteFile(path, []byte(step.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(path, now, now.Add(time.Duration(i+1)*time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		now = now.Add(2 * time.Second) // past the once-a-second check
		if got := call(t, "GET", ts.URL+"/v1/jobs", "Bearer "+step.token).StatusCode; got != step.want {
			t.Fatalf("%s: %d, want %d", step.what, got, step.want)
		}
	}
	if !strings.Contains(logs.String(), "keeping the tokens read before") || !strings.Contains(logs.String(), "every token is revoked") ||
		strings.Contains(logs.String(), rotated) {
		t.Fatalf("the broken and the emptied file are not reported, or a token is in the log:\n%s", logs.String())
	}
}

// TestParseTokens reports every bad line by number and name, never with the token.
func TestParseTokens(t *testing.T) {
	_, err := parseTokens([]byte("a read tiny1\nb root secret-token-0123456789\nc read x y z\nd read dup-token-0123456789\ne read dup-token-0123456789\n"))
	if err == nil {
		t.Fatal("bad tokens file accepted")
	}
	for _, want := range []string{"line 1 (a): the token is shorter than 16", `line 2 (b): role "root"`, "line 3: want", "line 5 (e): the token is also"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	for _, secret := range []string{"tiny1", "secret-token", "dup-token"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error holds a token: %v", err)
		}
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("# nothing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openTokens(empty, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "holds no token") {
		t.Fatalf("empty file: %v", err)
	}
	if _, err := openTokens(filepath.Join(t.TempDir(), "missing"), slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "SLUICE_PLANNER_AUTH=none") {
		t.Fatalf("missing file: %v", err)
	}
}
