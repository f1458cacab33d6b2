package main

import (
	"embed"
	"net/http"
	"strings"
)

// uiFiles are the status page, its script and its style sheet. They hold no data: the script asks
// the jobs API for it with the token the user gives the page.
//
//go:embed ui
var uiFiles embed.FS

// uiPolicy lets the page load only what the planner serves and talk only to the planner, so that a
// job name or an error message that reaches the page as markup cannot run or fetch anything.
const uiPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// uiRoutes serves the status page at / and its assets under /ui/, without a token: they are the same
// for everyone, and every request the page makes for data goes through the API's authorization.
func (p *Planner) uiRoutes(handle func(pattern string, h http.Handler)) {
	handle("GET /{$}", uiHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, uiFiles, "ui/index.html")
	})))
	files := http.FileServerFS(uiFiles)
	handle("GET /ui/", uiHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Files only: a directory would be listed, and the page has one address, /.
		if strings.HasSuffix(r.URL.Path, "/") || r.URL.Path == "/ui/index.html" {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})))
}

// uiHeaders adds the page's security headers. no-cache makes a browser ask again after an upgrade
// rather than run an old script against a new API.
func uiHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", uiPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}
