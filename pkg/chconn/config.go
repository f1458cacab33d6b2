package chconn

import (
	"net"
	"regexp"
	"slices"
	"time"

	"github.com/sluicedata/sluice/pkg/config"
)

// Config is the ClickHouse part of a service's configuration, read from SLUICE_CLICKHOUSE_… variables.
type Config struct {
	// Addr are the servers' native-protocol addresses, host:port, comma-separated.
	Addr []string `env:"ADDR, default=127.0.0.1:9000"`
	// Database holds sluice's tables; it is created when missing if CreateDatabase is set.
	Database       string `env:"DATABASE, default=default"`
	CreateDatabase bool   `env:"CREATE_DATABASE, default=true"`
	Username       string `env:"USERNAME, default=default"`
	// Password never appears in logs, errors or metrics; PasswordFile holds it instead (its first
	// line), such as a mounted secret.
	Password     config.Secret `env:"PASSWORD"`
	PasswordFile string        `env:"PASSWORD_FILE"`
	// TLS connects with TLS (the server's secure native port, usually 9440), verified with TLSFiles
	// (SLUICE_CLICKHOUSE_TLS_CA_FILE, _CERT_FILE, _KEY_FILE, _SERVER_NAME).
	TLS          bool            `env:"TLS, default=false"`
	TLSFiles     config.TLSFiles `env:", prefix=TLS_"`
	DialTimeout  time.Duration   `env:"DIAL_TIMEOUT, default=10s"`
	ReadTimeout  time.Duration   `env:"READ_TIMEOUT, default=60s"`
	MaxOpenConns int             `env:"MAX_OPEN_CONNS, default=8"`
	// Compression of the native protocol's blocks: lz4, zstd, none, or auto: none when every
	// address is a loopback one (compressing costs both ends CPU and saves nothing there), lz4
	// otherwise.
	Compression string `env:"COMPRESSION, default=auto"`
	// Cluster names a cluster of the servers' remote_servers (system.clusters): tables are made ON
	// CLUSTER, replicated, with a Distributed table to read them, and the loader inserts each row
	// into a replica of its shard. Empty: one server.
	Cluster string `env:"CLUSTER"`
	// InsertQuorum, on a cluster, acknowledges an insert once that many replicas of the shard
	// have it (insert_quorum); 0 or 1: once one has.
	InsertQuorum int `env:"INSERT_QUORUM, default=0"`
}

// Method is the compression the connection uses: Compression, with auto resolved.
func (c Config) Method() string {
	if c.Compression != "auto" {
		return c.Compression
	}
	for _, a := range c.Addr {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			host = a
		}
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return "lz4"
		}
	}
	return "none"
}

// legalIdent is a ClickHouse identifier that needs no quoting.
var legalIdent = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]{0,205}$`)

// Validate reports every problem with the ClickHouse configuration.
func (c Config) Validate() error {
	var p config.Problems
	p.AddAddresses("CLICKHOUSE_ADDR", c.Addr)
	if !legalIdent.MatchString(c.Database) {
		p.Addf("CLICKHOUSE_DATABASE", "%q is not a plain identifier (letters, digits, '_'; not starting with a digit)", c.Database)
	}
	if c.Username == "" {
		p.Addf("CLICKHOUSE_USERNAME", "must not be empty")
	}
	config.CheckSecretSource(&p, c.Password, c.PasswordFile, "CLICKHOUSE_PASSWORD_FILE")
	c.TLSFiles.Validate(&p, "CLICKHOUSE_TLS_", "CLICKHOUSE_TLS", c.TLS)
	if c.DialTimeout <= 0 {
		p.Addf("CLICKHOUSE_DIAL_TIMEOUT", "must be positive, got %s", c.DialTimeout)
	}
	if c.ReadTimeout <= 0 {
		p.Addf("CLICKHOUSE_READ_TIMEOUT", "must be positive, got %s", c.ReadTimeout)
	}
	if !slices.Contains([]string{"auto", "lz4", "zstd", "none"}, c.Compression) {
		p.Addf("CLICKHOUSE_COMPRESSION", "must be auto, lz4, zstd or none, got %q", c.Compression)
	}
	if c.Cluster != "" && !legalIdent.MatchString(c.Cluster) {
		p.Addf("CLICKHOUSE_CLUSTER", "%q is not a plain identifier (letters, digits, '_'; not starting with a digit)", c.Cluster)
	}
	if c.InsertQuorum < 0 || c.InsertQuorum > 16 {
		p.Addf("CLICKHOUSE_INSERT_QUORUM", "must be between 0 and 16, got %d", c.InsertQuorum)
	}
	if c.InsertQuorum > 1 && c.Cluster == "" {
		p.Addf("CLICKHOUSE_INSERT_QUORUM", "takes a cluster (SLUICE_CLICKHOUSE_CLUSTER): one server has no replicas to wait for")
	}
	if c.MaxOpenConns < 1 {
		p.Addf("CLICKHOUSE_MAX_OPEN_CONNS", "must be at least 1, got %d", c.MaxOpenConns)
	}
	return p.Err()
}
