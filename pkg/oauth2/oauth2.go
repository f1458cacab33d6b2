// Package oauth2 fetches access tokens with the OAuth 2.0 client credentials grant (RFC 6749 4.4):
// for the HTTP sources that want one, and for Kafka's OAUTHBEARER.
package oauth2

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client is a client of a token endpoint.
type Client struct {
	TokenURL string
	ID       string
	Secret   string
	Scopes   []string
}

// Token is an access token and how long it lives: 0 when the answer did not say, and the caller
// decides.
type Token struct {
	Access string
	Life   time.Duration
}

// Error is a token request that failed (a token URL that does not parse is a plain error). Neither
// the secret nor a token is in it.
type Error struct {
	// Status is the endpoint's answer; 0 when none came, and Err is then the transport's error,
	// without the token URL.
	Status int
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// maxLife bounds the life an answer gives a token.
const maxLife = 30 * 24 * time.Hour

// Fetch asks the token endpoint for a token, with the client's credentials in Basic auth, through
// hc, which decides where requests may go (and that no redirect takes the secret elsewhere).
func (c Client) Fetch(ctx context.Context, hc *http.Client) (Token, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	if len(c.Scopes) > 0 {
		form.Set("scope", strings.Join(c.Scopes, " "))
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return Token{}, errors.New("build the token request: the token URL does not parse")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = fmt.Errorf("%s: %w", ue.Op, ue.Err)
		}
		return Token{}, &Error{Err: err}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return Token{}, &Error{Status: resp.StatusCode,
			Err: fmt.Errorf("the token endpoint answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))}
	}
	var t struct {
		AccessToken string          `json:"access_token"`
		ExpiresIn   json.RawMessage `json:"expires_in"` // a number, or by some servers a string
	}
	if err := json.Unmarshal(body, &t); err != nil || t.AccessToken == "" {
		return Token{}, &Error{Status: resp.StatusCode, Err: errors.New("the token endpoint's answer has no access_token")}
	}
	secs, _ := strconv.ParseFloat(strings.Trim(string(t.ExpiresIn), `"`), 64)
	life := time.Duration(min(max(secs, 0), maxLife.Seconds()) * float64(time.Second))
	return Token{Access: t.AccessToken, Life: life}, nil
}
