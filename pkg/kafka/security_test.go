package kafka

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicedata/sluice/pkg/config"
)

func valid() Config {
	return Config{Brokers: []string{"127.0.0.1:9092"}, DialTimeout: 1, RequestTimeout: 1, SessionTimeout: 45e9, RebalanceTimeout: 60e9,
		ReplicationFactor: -1, TasksTopic: "t", TasksPartitions: 1, RawTopic: "r", RawPartitions: 1, DLQTopic: "d", DLQPartitions: 1,
		EventsTopic: "e", EventsPartitions: 1, JobsTopic: "j", JobsPartitions: 1, SchemasTopic: "s", SchemasPartitions: 1, LeaseTopic: "l"}
}

// TestSecurityValidate names the variable of every missing or conflicting setting.
func TestSecurityValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string // "" is valid
	}{
		{"none", func(*Config) {}, ""},
		{"scram", func(c *Config) { c.SASL = SASL{Mechanism: "SCRAM-SHA-512", Username: "u", PasswordFile: "/p"} }, ""},
		{"scram without password", func(c *Config) { c.SASL = SASL{Mechanism: "SCRAM-SHA-256", Username: "u"} }, "SLUICE_KAFKA_SASL_PASSWORD: (or"},
		{"plain without user", func(c *Config) { c.SASL = SASL{Mechanism: "PLAIN", Password: "p"} }, "SLUICE_KAFKA_SASL_USERNAME: is required"},
		{"both password and file", func(c *Config) { c.SASL = SASL{Mechanism: "PLAIN", Username: "u", Password: "p", PasswordFile: "/p"} }, "SLUICE_KAFKA_SASL_PASSWORD_FILE: set the value or the file"},
		{"unknown mechanism", func(c *Config) { c.SASL = SASL{Mechanism: "GSSAPI"} }, `SLUICE_KAFKA_SASL_MECHANISM: must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER, AWS_MSK_IAM, got "GSSAPI"`},
		{"credentials without mechanism", func(c *Config) { c.SASL = SASL{Username: "u", Password: "p"} }, "SLUICE_KAFKA_SASL_MECHANISM: is not set"},
		{"oauth file", func(c *Config) { c.SASL = SASL{Mechanism: "OAUTHBEARER", OAuthTokenFile: "/t"} }, ""},
		{"plain in clear text", func(c *Config) {
			c.Brokers = []string{"kafka.example:9092"}
			c.SASL = SASL{Mechanism: "PLAIN", Username: "u", Password: "p"}
		}, "SLUICE_KAFKA_SASL_MECHANISM: PLAIN sends the password in clear text"},
		{"plain over tls", func(c *Config) {
			c.Brokers, c.TLS = []string{"kafka.example:9093"}, true
			c.SASL = SASL{Mechanism: "PLAIN", Username: "u", Password: "p"}
		}, ""},
		{"oauth in clear text", func(c *Config) {
			c.Brokers = []string{"127.0.0.1:9092", "kafka.example:9092"}
			c.SASL = SASL{Mechanism: "OAUTHBEARER", OAuthTokenFile: "/t"}
		}, "OAUTHBEARER sends the token in clear text"},
		{"oauth token url on a name like loopback", func(c *Config) {
			c.SASL = SASL{Mechanism: "OAUTHBEARER", OAuthTokenURL: "http://127.evil.example/token", OAuthClientID: "i", OAuthClientSecret: "s"}
		}, "SLUICE_KAFKA_SASL_OAUTH_TOKEN_URL: must be an https URL"},
		{"oauth nothing", func(c *Config) { c.SASL = SASL{Mechanism: "OAUTHBEARER"} }, "SLUICE_KAFKA_SASL_OAUTH_TOKEN_FILE: (or"},
		{"oauth http url", func(c *Config) {
			c.SASL = SASL{Mechanism: "OAUTHBEARER", OAuthTokenURL: "http://idp.example/token", OAuthClientID: "i", OAuthClientSecret: "s"}
		}, "SLUICE_KAFKA_SASL_OAUTH_TOKEN_URL: must be an https URL"},
		{"oauth url without secret", func(c *Config) {
			c.SASL = SASL{Mechanism: "OAUTHBEARER", OAuthTokenURL: "https://idp.example/token", OAuthClientID: "i"}
		}, "SLUICE_KAFKA_SASL_OAUTH_CLIENT_SECRET: (or"},
		{"msk without key", func(c *Config) { c.SASL = SASL{Mechanism: "AWS_MSK_IAM", AWSAccessKeyID: "AKIA"} }, "SLUICE_KAFKA_SASL_AWS_SECRET_ACCESS_KEY: (or"},
		{"tls files without tls", func(c *Config) { c.TLSFiles.CAFile = "/ca.pem" }, "SLUICE_KAFKA_TLS: is off, but KAFKA_TLS_"},
		{"tls missing ca", func(c *Config) { c.TLS, c.TLSFiles.CAFile = true, "/nonexistent/ca.pem" }, "SLUICE_KAFKA_TLS_CA_FILE: read the CA file"},
		{"tls cert without key", func(c *Config) { c.TLS, c.TLSFiles.CertFile = true, "/c.pem" }, "SLUICE_KAFKA_TLS_CERT_FILE: and KAFKA_TLS_KEY_FILE go together"},
	} {
		cfg := valid()
		c.edit(&cfg)
		err := cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

// TestRefusal explains refused credentials by the variables to check, and leaves other errors be.
func TestRefusal(t *testing.T) {
	cfg := valid()
	cfg.SASL = SASL{Mechanism: "SCRAM-SHA-512", Username: "sluice-loader", Password: "hunter2-password"}
	err := cfg.Refusal(fmt.Errorf("ping: %w", kerr.SaslAuthenticationFailed))
	if err == nil || !strings.Contains(err.Error(), "SLUICE_KAFKA_SASL_PASSWORD") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("refused credentials: %v", err)
	}
	if err := cfg.Refusal(errors.New("dial tcp 127.0.0.1:9092: connect: connection refused")); err != nil {
		t.Fatalf("an unreachable broker is no refusal: %v", err)
	}
	if err := cfg.Refusal(kerr.TopicAuthorizationFailed); err == nil || !strings.Contains(err.Error(), "User:sluice-loader") {
		t.Fatalf("a denied topic: %v", err)
	}
}

// TestMechanismsReadSecretsFromFiles reads a rotated password file at each authentication, and
// fetches OAuth tokens with the client credentials grant, kept until near their expiry.
func TestMechanismsReadSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := config.ReadSecret("", pw, "KAFKA_SASL_PASSWORD_FILE")
	if err != nil || got.Reveal() != "first" {
		t.Fatalf("ReadSecret: %q %v", got.Reveal(), err)
	}
	if _, err := config.ReadSecret("", filepath.Join(dir, "missing"), "KAFKA_SASL_PASSWORD_FILE"); err == nil || !strings.Contains(err.Error(), "SLUICE_KAFKA_SASL_PASSWORD_FILE") {
		t.Fatalf("missing file: %v", err)
	}
	for _, m := range Mechanisms {
		s := SASL{Mechanism: m, Username: "u", PasswordFile: pw, OAuthTokenFile: pw, AWSAccessKeyID: "AKIA", AWSSecretAccessKeyFile: pw}
		if mech := s.mechanism(); mech == nil || mech.Name() != m {
			t.Errorf("%s: mechanism %v", m, mech)
		}
	}

	var issued atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		if !ok || id != "sluice" || secret != "first" || r.FormValue("grant_type") != "client_credentials" || r.FormValue("scope") != "kafka" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		issued.Add(1)
		fmt.Fprintf(w, `{"access_token": "tok-%d", "expires_in": 3600}`, issued.Load())
	}))
	defer ts.Close()
	cc := &clientCredentials{url: ts.URL, id: "sluice", scope: "kafka", client: ts.Client(),
		secret: func() (string, error) { s, err := config.ReadSecret("", pw, "X"); return s.Reveal(), err }}
	for range 3 {
		tok, err := cc.token(context.Background())
		if err != nil || tok != "tok-1" {
			t.Fatalf("token: %q %v", tok, err)
		}
	}
	if issued.Load() != 1 {
		t.Fatalf("%d tokens issued for three connections within its life", issued.Load())
	}
	if err := os.WriteFile(pw, []byte("rotated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cc.current = "" // expired
	if _, err := cc.token(context.Background()); err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "rotated") {
		t.Fatalf("a refused client secret: %v", err)
	}
}
