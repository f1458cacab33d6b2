package oauth2

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestFetch(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// RFC 6749 2.3.1: the id and the secret are form-encoded before they go in Basic auth.
		id, secret, ok := r.BasicAuth()
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
		switch {
		case !ok || id != "sluice:1" || secret != "s3cret&" || r.FormValue("grant_type") != "client_credentials":
			http.Error(w, "no", http.StatusUnauthorized)
		case r.FormValue("scope") == "a b":
			w.Write([]byte(`{"access_token": "tok", "expires_in": "120"}`))
		case r.FormValue("scope") == "none":
			w.Write([]byte(`{"token": "tok"}`))
		default:
			w.Write([]byte(`{"access_token": "tok"}`))
		}
	}))
	defer ts.Close()
	ok := Client{TokenURL: ts.URL, ID: "sluice:1", Secret: "s3cret&"}
	cases := []struct {
		name   string
		client Client
		want   Token
		status int
	}{
		{"a life as a string", Client{TokenURL: ts.URL, ID: ok.ID, Secret: ok.Secret, Scopes: []string{"a", "b"}}, Token{"tok", 2 * time.Minute}, 0},
		{"no life said", ok, Token{"tok", time.Hour}, 0},
		{"no access_token", Client{TokenURL: ts.URL, ID: ok.ID, Secret: ok.Secret, Scopes: []string{"none"}}, Token{}, 200},
		{"a refused secret", Client{TokenURL: ts.URL, ID: ok.ID, Secret: "wrong-secret"}, Token{}, 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok, err := c.client.Fetch(context.Background(), ts.Client())
			var oe *Error
			if errors.As(err, &oe) && oe.Status != c.status || err == nil && c.status != 0 || tok != c.want {
				t.Fatalf("token %+v, error %v, want %+v and status %d", tok, err, c.want, c.status)
			}
			if err != nil && strings.Contains(err.Error(), c.client.Secret) {
				t.Fatalf("the error %q holds the secret", err)
			}
		})
	}
	if _, err := (Client{TokenURL: "http://127.0.0.1:1/token"}).Fetch(context.Background(), ts.Client()); !errors.As(err, new(*Error)) {
		t.Fatalf("a refused connection: %v, want an *Error", err)
	}
}

func TestRenewAt(t *testing.T) {
	got := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct{ life, before time.Duration }{
		{time.Hour, time.Minute},
		{100 * time.Second, 10 * time.Second},
	} {
		if at := (Token{Life: c.life}).RenewAt(got); !at.Equal(got.Add(c.life - c.before)) {
			t.Errorf("life %s: renewed at %s, want %s before it expires", c.life, at, c.before)
		}
	}
}
