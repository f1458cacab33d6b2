package source

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/jobspec"
	"github.com/sluicedata/sluice/pkg/oauth2"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// Secrets resolves the references of a source's headers and credentials in this process: ${SOURCE_…}
// from the environment, ${file:/path} from a file under one of Dirs (the way Kubernetes and Docker
// mount secrets), never anywhere else, so that whoever submits a job cannot read the services' own
// files or variables. Each secret goes only to the hosts Hosts binds it to (SLUICE_SECRET_HOSTS):
// whoever submits a job chooses its URL, and must not be able to send a secret anywhere else.
type Secrets struct {
	Env  func(string) (string, bool)
	Dirs []string
	// Hosts binds reference names to the hosts they may be sent to ("api.example.com", or
	// "*.example.com" for its subdomains, or "*" for any host); a secret bound to none goes nowhere.
	Hosts map[string][]string
}

// Allowed reports whether the secret name may be sent to host.
func (s Secrets) Allowed(name, host string) bool {
	h := strings.ToLower(host)
	if hostOnly, _, err := net.SplitHostPort(h); err == nil {
		h = hostOnly // the port is no part of the binding
	}
	h = strings.Trim(h, "[]")
	for _, pattern := range s.Hosts[name] {
		pattern = strings.Trim(strings.ToLower(pattern), "[]")
		if suffix, wild := strings.CutPrefix(pattern, "*."); wild && strings.HasSuffix(h, "."+suffix) || pattern == h || pattern == "*" {
			return true
		}
	}
	return false
}

// ParseSecretHosts reads SLUICE_SECRET_HOSTS: NAME=host|host,NAME=host, where a NAME is a variable
// (SOURCE_TOKEN) or a file reference (file:/run/secrets/sluice/token).
func ParseSecretHosts(v string) (map[string][]string, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	out := map[string][]string{}
	for _, entry := range strings.Split(v, ",") {
		name, hosts, ok := strings.Cut(strings.TrimSpace(entry), "=")
		if !ok || name == "" || hosts == "" {
			return nil, fmt.Errorf("%q is not NAME=host|host", entry)
		}
		out[name] = append(out[name], strings.Split(hosts, "|")...)
	}
	return out, nil
}

// Lookup resolves one reference name.
func (s Secrets) Lookup(name string) (string, bool) {
	path, isFile := strings.CutPrefix(name, jobspec.FilePrefix)
	if !isFile {
		if s.Env == nil {
			return "", false
		}
		return s.Env(name)
	}
	real, err := filepath.EvalSymlinks(filepath.Clean(path))
	if err != nil {
		return "", false
	}
	for _, dir := range s.Dirs {
		root, err := filepath.EvalSymlinks(dir)
		if err != nil {
			continue
		}
		if rel, err := filepath.Rel(root, real); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && rel != "." {
			b, err := os.ReadFile(real)
			if err != nil {
				return "", false
			}
			return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), true
		}
	}
	return "", false
}

// TokenPrefix names, in SLUICE_SECRET_HOSTS, the hosts that the OAuth2 tokens bought with a secret
// may go to: token:SOURCE_CLIENT_SECRET=api.example.com. A token is worth what its secret is: without
// such a binding it goes only to the hosts that the secret itself is bound to.
const TokenPrefix = "token:"

// refusedSecret is the error of a secret that may not go to host.
func refusedSecret(name, host string) error {
	return fmt.Errorf("${%s} may not be sent to %s: SLUICE_SECRET_HOSTS does not bind it to that host", name, host)
}

// refusedToken is the error of a token, bought with the secret name, that may not go to host.
func refusedToken(name, host string) error {
	return fmt.Errorf("the OAuth2 token bought with ${%s} may not be sent to %s: SLUICE_SECRET_HOSTS binds neither %s nor %s%s to that host",
		name, host, name, TokenPrefix, name)
}

// credentials are what a source's requests carry: headers (its own and its auth's), query
// parameters (an api_key in the query), and an OAuth2 token renewed as it expires.
type credentials struct {
	headers map[string]string
	query   map[string]string
	token   *tokenSource
}

// checkBindings refuses a source that would send a secret, or a token bought with one, to a host
// SLUICE_SECRET_HOSTS does not bind it to. It reads no secret: the planner checks every job at
// submit, before it asks the source anything, and the extractor again before every task.
func (h *httpSource) checkBindings() error {
	if h.env.Allowed == nil {
		return nil
	}
	host := h.Limits().Host
	check := func(value, to string) error {
		for _, name := range jobspec.References(value) {
			if !h.env.Allowed(name, to) {
				return &Error{Class: "config", Err: refusedSecret(name, to)}
			}
		}
		return nil
	}
	for _, name := range slices.Sorted(maps.Keys(h.src.GetHeaders())) {
		if err := check(h.src.GetHeaders()[name], host); err != nil {
			return err
		}
	}
	a := h.src.GetAuth()
	switch a.GetType() {
	case sluicev1.Auth_TYPE_API_KEY:
		return check(a.Value, host)
	case sluicev1.Auth_TYPE_BASIC:
		return cmp.Or(check(a.Username, host), check(a.Password, host))
	case sluicev1.Auth_TYPE_OAUTH2_CLIENT_CREDENTIALS:
		// The client's credentials go to the token endpoint; the token they buy, to the source.
		tokenHost := ""
		if u, err := url.Parse(a.TokenUrl); err == nil {
			tokenHost = u.Host
		}
		if err := cmp.Or(check(a.ClientId, tokenHost), check(a.ClientSecret, tokenHost)); err != nil {
			return err
		}
		for _, name := range jobspec.References(a.ClientSecret) {
			if !h.env.Allowed(TokenPrefix+name, host) && !h.env.Allowed(name, host) {
				return &Error{Class: "config", Err: refusedToken(name, host)}
			}
		}
	}
	return nil
}

// credentials resolves the source's headers and auth, once checkBindings allows each secret, and
// the token its secret buys, where it goes.
func (h *httpSource) credentials() (*credentials, error) {
	if err := h.checkBindings(); err != nil {
		return nil, err
	}
	lookup := h.env.Lookup
	headers, err := jobspec.ExpandHeaders(h.src.Headers, lookup)
	if err != nil {
		return nil, &Error{Class: "config", Err: err}
	}
	c := &credentials{headers: headers}
	a := h.src.GetAuth()
	if a == nil {
		return c, nil
	}
	expand := func(what, v string) (string, error) {
		out, err := jobspec.Expand("auth."+what, v, lookup)
		if err != nil {
			return "", &Error{Class: "config", Err: err}
		}
		return out, nil
	}
	switch a.Type {
	case sluicev1.Auth_TYPE_API_KEY:
		v, err := expand("value", a.Value)
		if err != nil {
			return nil, err
		}
		if a.InQuery {
			c.query = map[string]string{a.Name: v}
		} else {
			c.headers[a.Name] = v
		}
	case sluicev1.Auth_TYPE_BASIC:
		user, err := expand("username", a.Username)
		if err != nil {
			return nil, err
		}
		pass, err := expand("password", a.Password)
		if err != nil {
			return nil, err
		}
		c.headers["Authorization"] = "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	case sluicev1.Auth_TYPE_OAUTH2_CLIENT_CREDENTIALS:
		id, err := expand("client_id", a.ClientId)
		if err != nil {
			return nil, err
		}
		secret, err := expand("client_secret", a.ClientSecret)
		if err != nil {
			return nil, err
		}
		c.token = h.env.Tokens.source(a.TokenUrl, id, secret, a.Scopes)
	default:
		return nil, &Error{Class: "config", Err: fmt.Errorf("unknown auth type %v", a.Type)}
	}
	return c, nil
}

// forRequest returns the headers of one request, with a fresh token when there is one: not the
// refused one, which the source answered 401 to.
func (c *credentials) forRequest(ctx context.Context, refused string) (map[string]string, *Error) {
	if c.token == nil {
		return c.headers, nil
	}
	tok, err := c.token.get(ctx, refused)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(c.headers)+1)
	for k, v := range c.headers {
		out[k] = v
	}
	out["Authorization"] = "Bearer " + tok
	return out, nil
}

// withQuery adds the credentials' query parameters to u.
func (c *credentials) withQuery(u string) string {
	return c.editQuery(u, func(q url.Values, k, v string) { q.Set(k, v) })
}

// withoutQuery removes the credentials' query parameters from u, which withQuery puts back.
func (c *credentials) withoutQuery(u string) string {
	return c.editQuery(u, func(q url.Values, k, _ string) { q.Del(k) })
}

func (c *credentials) editQuery(u string, edit func(q url.Values, k, v string)) string {
	if len(c.query) == 0 {
		return u
	}
	parsed, err := url.Parse(u)
	if err != nil {
		return u
	}
	q := parsed.Query()
	for k, v := range c.query {
		edit(q, k, v)
	}
	parsed.RawQuery = q.Encode()
	return parsed.String()
}

// fetch gets a page with the source's credentials; a 401 with an OAuth2 token renews the token and
// asks once more.
func (h *httpSource) fetch(ctx context.Context, c *credentials, u, recordsPath, totalPath string, pol Policy) (Page, int, *Error) {
	headers, ferr := h.headers(ctx, c, "", pol)
	if ferr != nil {
		return Page{}, 1, ferr
	}
	u = c.withQuery(u)
	page, n, ferr := h.env.Fetcher.FetchPage(ctx, u, headers, recordsPath, totalPath, pol)
	if ferr == nil || ferr.Status != http.StatusUnauthorized || c.token == nil {
		return page, n, ferr
	}
	if headers, ferr = h.headers(ctx, c, strings.TrimPrefix(headers["Authorization"], "Bearer "), pol); ferr != nil {
		return Page{}, n, ferr
	}
	page, m, ferr := h.env.Fetcher.FetchPage(ctx, u, headers, recordsPath, totalPath, pol)
	return page, n + m, ferr
}

// headers are c's headers for one request, a token endpoint that fails transiently asked again
// under the page's retries.
func (h *httpSource) headers(ctx context.Context, c *credentials, refused string, pol Policy) (map[string]string, *Error) {
	if c.token == nil {
		return c.headers, nil
	}
	var (
		out  map[string]string
		last *Error
	)
	_, err := h.env.Fetcher.Retry.Do(ctx, "token", delivery.Policy{Backoff: pol.Backoff, MaxAttempts: pol.MaxRetries + 1, Deadline: pol.Deadline},
		func(int) error {
			var ferr *Error
			if out, ferr = c.forRequest(ctx, refused); ferr != nil {
				last = ferr
				return ferr.classified()
			}
			return nil
		})
	if err != nil {
		if last == nil {
			last = &Error{Class: "canceled", Err: err}
		}
		return nil, last
	}
	return out, nil
}

// Tokens are the OAuth2 tokens of one process, shared by every task of the same client.
type Tokens struct {
	Client *http.Client
	Now    func() time.Time
	// Issued counts tokens obtained, for a metric.
	Issued func()

	mu      sync.Mutex
	sources map[string]*tokenSource
}

func (t *Tokens) source(tokenURL, id, secret string, scopes []string) *tokenSource {
	key := tokenURL + "\x00" + id + "\x00" + strings.Join(scopes, " ")
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sources == nil {
		t.sources = map[string]*tokenSource{}
	}
	ts := t.sources[key]
	if ts == nil || ts.secret != secret {
		ts = &tokenSource{tokens: t, url: tokenURL, id: id, secret: secret, scopes: scopes}
		t.sources[key] = ts
	}
	return ts
}

// tokenSource is one client's token, renewed before it expires.
type tokenSource struct {
	tokens          *Tokens
	url, id, secret string
	scopes          []string
	mu              sync.Mutex
	token           string
	renewAt         time.Time
}

// get returns a token that is not about to expire and is not refused (the source answered 401 to
// it; another task may have renewed it already).
func (ts *tokenSource) get(ctx context.Context, refused string) (string, *Error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	now := ts.tokens.Now()
	if ts.token != "" && now.Before(ts.renewAt) && ts.token != refused {
		return ts.token, nil
	}
	tok, err := ts.request(ctx)
	if err != nil {
		return "", err
	}
	// Renewed a tenth of its life before it expires, at most a minute before; a token whose life
	// the endpoint did not say, after an hour (a 401 renews it sooner).
	life := cmp.Or(tok.Life, time.Hour)
	ts.token, ts.renewAt = tok.Access, now.Add(life-min(life/10, time.Minute))
	if ts.tokens.Issued != nil {
		ts.tokens.Issued()
	}
	return tok.Access, nil
}

// request asks the token endpoint with the client's credentials. Its errors carry neither the
// secret nor the token.
func (ts *tokenSource) request(ctx context.Context) (oauth2.Token, *Error) {
	c := oauth2.Client{TokenURL: ts.url, ID: ts.id, Secret: ts.secret, Scopes: ts.scopes}
	tok, err := c.Fetch(ctx, ts.tokens.Client)
	var oe *oauth2.Error
	switch {
	case err == nil:
		return tok, nil
	case !errors.As(err, &oe):
		return tok, &Error{Class: "auth", Err: err}
	case oe.Status == 0:
		if fe := transportError(ctx, oe.Err); fe.Class == "egress" || fe.Class == "redirect" {
			return tok, fe // this deployment refuses the token URL: no retry helps
		}
		return tok, &Error{Class: "auth", Retryable: true, Err: fmt.Errorf("token request failed: %w", oe.Err)}
	case oe.Status == http.StatusOK:
		return tok, &Error{Class: "auth", Retryable: true, Status: oe.Status, Err: oe}
	default:
		return tok, &Error{Class: "auth", Retryable: oe.Status >= 500 || oe.Status == http.StatusTooManyRequests, Status: oe.Status, Err: oe}
	}
}
