package main

import (
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// uiRig serves the planner's routes, the jobs API behind a tokens file, as run wires them.
func uiRig(t *testing.T) *httptest.Server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("dash read "+readToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := openTokens(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	p := &Planner{auth: &authorizer{tokens: tokens}, jobs: newJobs(), now: time.Now}
	mux := http.NewServeMux()
	p.routes(mux.Handle)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts
}

func get(t *testing.T, url, token string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
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
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// TestStatusPageServed serves the page and its assets without a token, with the headers that keep
// them from loading anything else or being framed, while the data API still wants a token.
func TestStatusPageServed(t *testing.T) {
	ts := uiRig(t)
	for _, c := range []struct {
		path, token string
		status      int
		typ, holds  string
	}{
		{"/", "", http.StatusOK, "text/html", `<script src="ui/app.js"`},
		{"/ui/app.js", "", http.StatusOK, "text/javascript", "v1/jobs"},
		{"/ui/style.css", "", http.StatusOK, "text/css", "svg.chart"},
		{"/ui/", "", http.StatusNotFound, "text/plain", ""},
		{"/ui/index.html", "", http.StatusNotFound, "text/plain", ""},
		{"/ui/missing.js", "", http.StatusNotFound, "text/plain", ""},
		{"/v1/jobs", "", http.StatusUnauthorized, "application/json", "bearer token"},
		{"/v1/jobs", readToken, http.StatusOK, "application/json", `"jobs"`},
	} {
		t.Run(c.path+"/"+http.StatusText(c.status), func(t *testing.T) {
			resp, body := get(t, ts.URL+c.path, c.token)
			if resp.StatusCode != c.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), c.typ) || !strings.Contains(body, c.holds) {
				t.Fatalf("GET %s: %s %s, body %.200q; want %d %s holding %q", c.path, resp.Status, resp.Header.Get("Content-Type"), body, c.status, c.typ, c.holds)
			}
			if strings.HasPrefix(c.path, "/v1/") || c.status != http.StatusOK {
				return // the API's answers, and errors, which hold nothing to protect
			}
			for name, want := range map[string]string{
				"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
				"X-Content-Type-Options":  "nosniff",
				"Referrer-Policy":         "no-referrer",
				"Cache-Control":           "no-cache",
			} {
				if got := resp.Header.Get(name); got != want {
					t.Errorf("GET %s: %s is %q, want %q", c.path, name, got, want)
				}
			}
		})
	}
}

var (
	// svgNamespace is the one absolute URL the page holds: a name that is never fetched.
	svgNamespace = `"http://www.w3.org/2000/svg"`
	absoluteURL  = regexp.MustCompile(`(?i)https?:|(src|href|action)\s*=\s*["']?\s*//|url\(\s*["']?\s*//|@import`)
	reference    = regexp.MustCompile(`(?i)\b(src|href)\s*=\s*"([^"]*)"`)
)

// TestStatusPageStaysLocal reads every embedded asset: none names another origin, and each file the
// page refers to is served by the planner itself.
func TestStatusPageStaysLocal(t *testing.T) {
	ts := uiRig(t)
	err := fs.WalkDir(uiFiles, "ui", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := uiFiles.ReadFile(path)
		if err != nil {
			return err
		}
		text := strings.ReplaceAll(string(b), svgNamespace, `""`)
		if m := absoluteURL.FindString(text); m != "" {
			t.Errorf("%s refers to another origin: %q", path, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	page, err := uiFiles.ReadFile("ui/index.html")
	if err != nil {
		t.Fatal(err)
	}
	refs := reference.FindAllStringSubmatch(string(page), -1)
	if len(refs) < 3 {
		t.Fatalf("index.html refers to %d files, want the icon, the script and the style sheet", len(refs))
	}
	for _, m := range refs {
		if m[2] == "data:," { // the empty icon, so that no browser asks for /favicon.ico
			continue
		}
		if resp, _ := get(t, ts.URL+"/"+m[2], ""); resp.StatusCode != http.StatusOK {
			t.Errorf("index.html refers to %s, which is served %s", m[2], resp.Status)
		}
	}
}

// TestStatusPageWritesNoMarkup keeps the script from turning text into markup: job names and error
// messages are other people's data, and the page puts them in with textContent only.
func TestStatusPageWritesNoMarkup(t *testing.T) {
	b, err := uiFiles.ReadFile("ui/app.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "createContextualFragment"} {
		if strings.Contains(string(b), sink) {
			t.Errorf("app.js uses %s", sink)
		}
	}
}
