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
		{"no life said", ok, Token{"tok", 0}, 0},
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
	_, err := (Client{TokenURL: "http://127.0.0.1:1/token-path"}).Fetch(context.Background(), ts.Client())
	if oe := new(Error); !errors.As(err, &oe) || oe.Status != 0 || strings.Contains(err.Error(), "token-path") {
		t.Fatalf("a refused connection: %v, want an *Error without the URL", err)
	}
}
