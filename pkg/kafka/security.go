package kafka

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/aws"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/oauth2"
)

// SASL is how a client authenticates to the brokers, from SLUICE_KAFKA_SASL_… variables. Every secret
// may be given as a value or as a file (…_FILE), which is read again at each new connection, so a
// rotated secret is taken without a restart.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM; empty: none.
	Mechanism string `env:"MECHANISM"`
	// Username and Password are PLAIN's and SCRAM's credentials.
	Username     string        `env:"USERNAME"`
	Password     config.Secret `env:"PASSWORD"`
	PasswordFile string        `env:"PASSWORD_FILE"`
	// OAUTHBEARER: a token (OAuthTokenFile, such as a Kubernetes projected service account token), or
	// one fetched with the client credentials grant from OAuthTokenURL.
	OAuthTokenFile        string        `env:"OAUTH_TOKEN_FILE"`
	OAuthTokenURL         string        `env:"OAUTH_TOKEN_URL"`
	OAuthClientID         string        `env:"OAUTH_CLIENT_ID"`
	OAuthClientSecret     config.Secret `env:"OAUTH_CLIENT_SECRET"`
	OAuthClientSecretFile string        `env:"OAUTH_CLIENT_SECRET_FILE"`
	OAuthScope            string        `env:"OAUTH_SCOPE"`
	// AWS_MSK_IAM: an access key, its secret and, for temporary credentials, a session token.
	AWSAccessKeyID         string        `env:"AWS_ACCESS_KEY_ID"`
	AWSSecretAccessKey     config.Secret `env:"AWS_SECRET_ACCESS_KEY"`
	AWSSecretAccessKeyFile string        `env:"AWS_SECRET_ACCESS_KEY_FILE"`
	AWSSessionToken        config.Secret `env:"AWS_SESSION_TOKEN"`
	AWSSessionTokenFile    string        `env:"AWS_SESSION_TOKEN_FILE"`
}

// Mechanisms are the SASL mechanisms sluice speaks.
var Mechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "AWS_MSK_IAM"}

// validate reports the SASL settings' problems.
func (s SASL) validate(p *config.Problems, tls bool, brokers []string) {
	const pre = "KAFKA_SASL_"
	config.CheckSecretSource(p, s.Password, s.PasswordFile, pre+"PASSWORD_FILE")
	config.CheckSecretSource(p, s.OAuthClientSecret, s.OAuthClientSecretFile, pre+"OAUTH_CLIENT_SECRET_FILE")
	config.CheckSecretSource(p, s.AWSSecretAccessKey, s.AWSSecretAccessKeyFile, pre+"AWS_SECRET_ACCESS_KEY_FILE")
	config.CheckSecretSource(p, s.AWSSessionToken, s.AWSSessionTokenFile, pre+"AWS_SESSION_TOKEN_FILE")
	switch s.Mechanism {
	case "":
		if s.Username != "" || s.Password != "" || s.PasswordFile != "" {
			p.Addf(pre+"MECHANISM", "is not set, but credentials are: set it to one of %s", strings.Join(Mechanisms, ", "))
		}
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if s.Mechanism == "PLAIN" && !tls && !allLoopback(brokers) {
			p.Addf(pre+"MECHANISM", "PLAIN sends the password in clear text: set SLUICE_KAFKA_TLS=true")
		}
		if s.Username == "" {
			p.Addf(pre+"USERNAME", "is required for %s", s.Mechanism)
		}
		if s.Password == "" && s.PasswordFile == "" {
			p.Addf(pre+"PASSWORD", "(or %sPASSWORD_FILE) is required for %s", pre, s.Mechanism)
		}
	case "OAUTHBEARER":
		if !tls && !allLoopback(brokers) {
			p.Addf(pre+"MECHANISM", "OAUTHBEARER sends the token in clear text: set SLUICE_KAFKA_TLS=true")
		}
		switch {
		case s.OAuthTokenFile != "" && s.OAuthTokenURL != "":
			p.Addf(pre+"OAUTH_TOKEN_FILE", "set either it or %sOAUTH_TOKEN_URL, not both", pre)
		case s.OAuthTokenFile == "" && s.OAuthTokenURL == "":
			p.Addf(pre+"OAUTH_TOKEN_FILE", "(or %sOAUTH_TOKEN_URL with a client id and secret) is required for OAUTHBEARER", pre)
		case s.OAuthTokenURL != "":
			if u, err := url.Parse(s.OAuthTokenURL); err != nil || u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname())) || u.User != nil {
				p.Addf(pre+"OAUTH_TOKEN_URL", "must be an https URL without credentials (http only on a loopback address)")
			}
			if s.OAuthClientID == "" {
				p.Addf(pre+"OAUTH_CLIENT_ID", "is required with %sOAUTH_TOKEN_URL", pre)
			}
			if s.OAuthClientSecret == "" && s.OAuthClientSecretFile == "" {
				p.Addf(pre+"OAUTH_CLIENT_SECRET", "(or %sOAUTH_CLIENT_SECRET_FILE) is required with %sOAUTH_TOKEN_URL", pre, pre)
			}
		}
	case "AWS_MSK_IAM":
		if s.AWSAccessKeyID == "" {
			p.Addf(pre+"AWS_ACCESS_KEY_ID", "is required for AWS_MSK_IAM")
		}
		if s.AWSSecretAccessKey == "" && s.AWSSecretAccessKeyFile == "" {
			p.Addf(pre+"AWS_SECRET_ACCESS_KEY", "(or %sAWS_SECRET_ACCESS_KEY_FILE) is required for AWS_MSK_IAM", pre)
		}
	default:
		p.Addf(pre+"MECHANISM", "must be one of %s, got %q", strings.Join(Mechanisms, ", "), s.Mechanism)
	}
}

func isLoopbackHost(h string) bool {
	a, err := netip.ParseAddr(h)
	return h == "localhost" || err == nil && a.IsLoopback()
}

// allLoopback reports whether every broker is on this machine.
func allLoopback(brokers []string) bool {
	for _, b := range brokers {
		host, _, err := net.SplitHostPort(b)
		if err != nil || !isLoopbackHost(host) {
			return false
		}
	}
	return len(brokers) > 0
}

// mechanism returns the franz-go SASL mechanism; nil when none is configured.
func (s SASL) mechanism() sasl.Mechanism {
	secret := func(v config.Secret, file, fileVar string) (string, error) {
		got, err := config.ReadSecret(v, file, "KAFKA_SASL_"+fileVar)
		return got.Reveal(), err
	}
	switch s.Mechanism {
	case "PLAIN":
		return plain.Plain(func(context.Context) (plain.Auth, error) {
			pass, err := secret(s.Password, s.PasswordFile, "PASSWORD_FILE")
			return plain.Auth{User: s.Username, Pass: pass}, err
		})
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		fn := func(context.Context) (scram.Auth, error) {
			pass, err := secret(s.Password, s.PasswordFile, "PASSWORD_FILE")
			return scram.Auth{User: s.Username, Pass: pass}, err
		}
		if s.Mechanism == "SCRAM-SHA-256" {
			return scram.Sha256(fn)
		}
		return scram.Sha512(fn)
	case "OAUTHBEARER":
		if s.OAuthTokenFile != "" {
			return oauth.Oauth(func(context.Context) (oauth.Auth, error) {
				tok, err := secret("", s.OAuthTokenFile, "OAUTH_TOKEN_FILE")
				return oauth.Auth{Token: tok}, err
			})
		}
		cc := &clientCredentials{url: s.OAuthTokenURL, id: s.OAuthClientID, scope: s.OAuthScope,
			secret: func() (string, error) {
				return secret(s.OAuthClientSecret, s.OAuthClientSecretFile, "OAUTH_CLIENT_SECRET_FILE")
			},
			// The client secret goes to the token URL and nowhere else: no redirect is followed.
			client: &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
		return oauth.Oauth(func(ctx context.Context) (oauth.Auth, error) {
			tok, err := cc.token(ctx)
			return oauth.Auth{Token: tok}, err
		})
	case "AWS_MSK_IAM":
		return aws.ManagedStreamingIAM(func(context.Context) (aws.Auth, error) {
			key, err := secret(s.AWSSecretAccessKey, s.AWSSecretAccessKeyFile, "AWS_SECRET_ACCESS_KEY_FILE")
			if err != nil {
				return aws.Auth{}, err
			}
			session, err := secret(s.AWSSessionToken, s.AWSSessionTokenFile, "AWS_SESSION_TOKEN_FILE")
			return aws.Auth{AccessKey: s.AWSAccessKeyID, SecretKey: key, SessionToken: session, UserAgent: "sluice"}, err
		})
	}
	return nil
}

// clientCredentials fetches OAUTHBEARER tokens with the OAuth 2.0 client credentials grant and
// keeps each until shortly before it expires; the client secret is read again for each new token.
type clientCredentials struct {
	url, id, scope string
	secret         func() (string, error)
	client         *http.Client

	mu      sync.Mutex
	current string
	renewAt time.Time
}

func (c *clientCredentials) token(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.current != "" && now.Before(c.renewAt) {
		return c.current, nil
	}
	secret, err := c.secret()
	if err != nil {
		return "", err
	}
	tok, err := oauth2.Client{TokenURL: c.url, ID: c.id, Secret: secret, Scopes: strings.Fields(c.scope)}.Fetch(ctx, c.client)
	var oe *oauth2.Error
	switch {
	case errors.As(err, &oe) && oe.Status != 0 && oe.Status != http.StatusOK:
		return "", fmt.Errorf("fetch a Kafka OAuth token: %w (check SLUICE_KAFKA_SASL_OAUTH_CLIENT_ID and _SECRET)", err)
	case err != nil:
		return "", fmt.Errorf("fetch a Kafka OAuth token: %w", err)
	}
	// Renewed a minute before it expires, or halfway through a life shorter than two minutes. A
	// token whose life the endpoint did not say is taken to last 5 minutes.
	life := cmp.Or(tok.Life, 5*time.Minute)
	c.current, c.renewAt = tok.Access, now.Add(max(life-time.Minute, life/2))
	return c.current, nil
}

// securityOpts are the client options of the TLS and SASL settings.
func (c Config) securityOpts() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if c.TLS {
		tc, err := c.TLSFiles.Config()
		if err != nil {
			return nil, fmt.Errorf("SLUICE_KAFKA_TLS_…: %w", err)
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if m := c.SASL.mechanism(); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// Explain turns an error of the brokers refusing the client into one that names the settings to
// check; other errors pass as they are.
func (c Config) Explain(err error) error {
	if r := c.Refusal(err); r != nil {
		return r
	}
	return err
}

// Refusal is err explained when it says the brokers refused the client's credentials, its rights or
// its TLS; nil for any other error.
func (c Config) Refusal(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.IllegalSaslState), errors.Is(err, kerr.UnsupportedSaslMechanism):
		who := "SLUICE_KAFKA_SASL_USERNAME and SLUICE_KAFKA_SASL_PASSWORD (or _PASSWORD_FILE)"
		switch c.SASL.Mechanism {
		case "OAUTHBEARER":
			who = "the OAuth token (SLUICE_KAFKA_SASL_OAUTH_…)"
		case "AWS_MSK_IAM":
			who = "SLUICE_KAFKA_SASL_AWS_ACCESS_KEY_ID and SLUICE_KAFKA_SASL_AWS_SECRET_ACCESS_KEY"
		}
		return fmt.Errorf("kafka refused the %s credentials: check %s: %w", c.SASL.Mechanism, who, err)
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.GroupAuthorizationFailed),
		errors.Is(err, kerr.ClusterAuthorizationFailed), errors.Is(err, kerr.TransactionalIDAuthorizationFailed):
		return fmt.Errorf("kafka denied %s what it needs (see the README's ACLs for each service): %w", c.principal(), err)
	case strings.Contains(err.Error(), "tls: ") || strings.Contains(err.Error(), "x509: "):
		return fmt.Errorf("TLS to kafka failed: check SLUICE_KAFKA_TLS_CA_FILE and SLUICE_KAFKA_TLS_SERVER_NAME: %w", err)
	}
	return nil
}

func (c Config) principal() string {
	if c.SASL.Username != "" {
		return "User:" + c.SASL.Username
	}
	return "this client"
}
