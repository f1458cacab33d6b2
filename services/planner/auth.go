package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// role is what a token may do with the jobs API; each role may do what the ones below it may.
type role int

const (
	roleRead   role = iota + 1 // list and read jobs and schedules
	roleSubmit                 // and submit jobs
	roleAdmin                  // and remove schedules
)

var roleNames = map[string]role{"read": roleRead, "submit": roleSubmit, "admin": roleAdmin}

func (r role) String() string {
	for name, v := range roleNames {
		if v == r {
			return name
		}
	}
	return "none"
}

// minTokenLength keeps guessable tokens out of the tokens file.
const minTokenLength = 16

// principal is who a token belongs to: the name the tokens file gives it, never the token.
type principal struct {
	name string
	role role
}

// parseTokens reads a tokens file: one token a line as "name role token", where role is read,
// submit or admin; blank lines and lines starting with # are skipped. Errors name the line, never
// a token.
func parseTokens(b []byte) (map[[sha256.Size]byte]principal, error) {
	tokens := map[[sha256.Size]byte]principal{}
	names := map[string]bool{}
	var errs []error
	s := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; s.Scan(); n++ {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 3 {
			errs = append(errs, fmt.Errorf("line %d: want \"name role token\", got %d fields", n, len(fields)))
			continue
		}
		name, roleName, token := fields[0], fields[1], fields[2]
		r, ok := roleNames[roleName]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("line %d (%s): role %q is not read, submit or admin", n, name, roleName))
		case len(token) < minTokenLength:
			errs = append(errs, fmt.Errorf("line %d (%s): the token is shorter than %d characters", n, name, minTokenLength))
		case names[name]:
			errs = append(errs, fmt.Errorf("line %d: the name %s is used twice", n, name))
		}
		sum := sha256.Sum256([]byte(token))
		if _, dup := tokens[sum]; dup {
			errs = append(errs, fmt.Errorf("line %d (%s): the token is also another name's", n, name))
		}
		names[name] = true
		tokens[sum] = principal{name: name, role: r}
	}
	if err := s.Err(); err != nil {
		errs = append(errs, err)
	}
	return tokens, errors.Join(errs...)
}

// errNoTokens is a tokens file without a token: the planner does not start with it, and a running
// planner that reads it again serves no one.
var errNoTokens = errors.New(`holds no token: add lines of "name role token"`)

// tokensFile is the planner's tokens, read from a file again when it changes (a rotated Kubernetes
// secret), at most once a second. A file removed or emptied revokes every token; a file that no
// longer parses keeps the tokens read before, and the planner says why once.
type tokensFile struct {
	path string
	log  *slog.Logger
	now  func() time.Time

	mu      sync.Mutex
	checked time.Time
	modTime time.Time
	size    int64
	tokens  map[[sha256.Size]byte]principal
	broken  error
}

// openTokens reads the tokens file; the planner does not start without a valid one.
func openTokens(path string, log *slog.Logger) (*tokensFile, error) {
	f := &tokensFile{path: path, log: log, now: time.Now}
	err := f.reload()
	if err == nil && len(f.tokens) == 0 {
		err = errNoTokens
	}
	if err != nil {
		return nil, fmt.Errorf("SLUICE_PLANNER_TOKENS_FILE %s: %w (or set SLUICE_PLANNER_AUTH=none to serve the API without authentication)", path, err)
	}
	log.Info("planner API tokens read", "file", path, "tokens", len(f.tokens))
	return f, nil
}

func (f *tokensFile) reload() error {
	st, err := os.Stat(f.path)
	if errors.Is(err, os.ErrNotExist) && f.tokens != nil {
		f.tokens, f.modTime, f.size = map[[sha256.Size]byte]principal{}, time.Time{}, 0 // removed: revoked
		return nil
	}
	if err != nil {
		return err
	}
	if st.ModTime().Equal(f.modTime) && st.Size() == f.size && f.tokens != nil {
		return nil
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return err
	}
	tokens, err := parseTokens(b)
	if err != nil {
		return err
	}
	f.tokens, f.modTime, f.size = tokens, st.ModTime(), st.Size()
	return nil
}

// lookup returns whom token belongs to.
func (f *tokensFile) lookup(token string) (principal, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := f.now(); now.Sub(f.checked) >= time.Second {
		f.checked = now
		before := len(f.tokens)
		err := f.reload()
		switch {
		case err != nil && (f.broken == nil || f.broken.Error() != err.Error()):
			f.log.Error("cannot read the planner API tokens again; keeping the tokens read before", "file", f.path, "error", err)
		case err == nil && len(f.tokens) == 0 && before > 0:
			f.log.Warn("the planner API tokens file is gone or empty: every token is revoked", "file", f.path)
		case err == nil && f.broken != nil, err == nil && before != len(f.tokens):
			f.log.Info("planner API tokens read again", "file", f.path, "tokens", len(f.tokens))
		}
		f.broken = err
	}
	p, ok := f.tokens[sha256.Sum256([]byte(token))]
	return p, ok
}

// authorizer guards the jobs API: nil serves it to everyone (SLUICE_PLANNER_AUTH=none).
type authorizer struct {
	tokens *tokensFile
}

type principalKey struct{}

// who returns the name of the token a request came with, or "" when the API is open.
func who(ctx context.Context) string {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p.name
}

// require serves h to requests with a token of at least role need: 401 without a valid token, 403
// for a token whose role may not.
func (a *authorizer) require(need role, h http.Handler) http.Handler {
	if a == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		token = strings.TrimSpace(token)
		if !strings.EqualFold(scheme, "Bearer") || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice-planner"`)
			writeJSON(w, http.StatusUnauthorized, apiError{Error: "this API needs a bearer token (Authorization: Bearer …; sluicectl sends SLUICE_PLANNER_TOKEN)"})
			return
		}
		p, ok := a.tokens.lookup(token)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice-planner", error="invalid_token"`)
			writeJSON(w, http.StatusUnauthorized, apiError{Error: "the bearer token is not one of the planner's tokens"})
			return
		}
		if p.role < need {
			writeJSON(w, http.StatusForbidden, apiError{Error: fmt.Sprintf("token %s has the role %s; %s %s needs %s", p.name, p.role, r.Method, r.URL.Path, need)})
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}
