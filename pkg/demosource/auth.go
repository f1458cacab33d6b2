package demosource

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"
	"time"
)

// tokens are the OAuth2 tokens the source issued, with when they expire.
type tokens struct {
	mu      sync.Mutex
	expiry  map[string]time.Time
	granted int64 // authorized requests, for OAuthRevokeEvery
}

// serveToken issues a token for the client credentials, in Basic auth or in the form.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostFormValue("client_id"), r.PostFormValue("client_secret")
	}
	if r.PostFormValue("grant_type") != "client_credentials" || !equal(id, s.cfg.OAuthClientID) || !equal(secret, s.cfg.OAuthClientSecret) {
		s.stats.unauthorized.Add(1)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
		return
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	s.tokens.mu.Lock()
	s.tokens.expiry[tok] = s.now().Add(s.cfg.OAuthTokenTTL)
	s.tokens.mu.Unlock()
	s.stats.tokens.Add(1)
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer",
		"expires_in": int64(s.cfg.OAuthTokenTTL / time.Second)})
}

// authorized checks the credentials the source requires of an API request.
func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.APIKey != "" {
		key := r.Header.Get("X-Api-Key")
		if key == "" {
			key = r.URL.Query().Get("api_key")
		}
		if !equal(key, s.cfg.APIKey) {
			return false
		}
	}
	if s.cfg.OAuthClientID == "" {
		return true
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.tokens.mu.Lock()
	defer s.tokens.mu.Unlock()
	exp, known := s.tokens.expiry[tok]
	if !ok || !known || !s.now().Before(exp) {
		return false
	}
	s.tokens.granted++
	if n := s.cfg.OAuthRevokeEvery; n > 0 && s.tokens.granted%n == 0 {
		delete(s.tokens.expiry, tok)
		return false
	}
	return true
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
