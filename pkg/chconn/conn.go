package chconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/sluicedata/sluice/pkg/config"
)

// codeUnknownDatabase is ClickHouse's UNKNOWN_DATABASE.
const codeUnknownDatabase = 81

// Conn is a pool of native-protocol connections to ClickHouse and what the server is.
type Conn struct {
	driver.Conn
	// Version is the server's version, as it said in the handshake.
	Version Version
	// Features are the capabilities of that version.
	Features Features
	// Database is the database that unqualified table names resolve to.
	Database string
	// Cluster is the cluster whose tables the server's are (Config.Cluster): "" for one server.
	Cluster string
}

// Open connects to ClickHouse, creates the configured database when it is missing and allowed to,
// and reads the server version. It fails when the server does not answer within DialTimeout.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Conn, error) {
	conn, err := dial(ctx, cfg, cfg.Database, log)
	if isUnknownDatabase(err) && cfg.CreateDatabase {
		if err := createDatabase(ctx, cfg, log); err != nil {
			return nil, err
		}
		conn, err = dial(ctx, cfg, cfg.Database, log)
	}
	if err != nil {
		return nil, err
	}
	sv, err := conn.ServerVersion()
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("read clickhouse server version: %w", err)
	}
	v := Version{Major: sv.Version.Major, Minor: sv.Version.Minor, Patch: sv.Version.Patch}
	return &Conn{Conn: conn, Version: v, Features: FeaturesOf(v), Database: cfg.Database, Cluster: cfg.Cluster}, nil
}

// Ping checks that a connection to the server works: the loader's readiness check.
func (c *Conn) Ping(ctx context.Context) error {
	if err := c.Conn.Ping(ctx); err != nil {
		return fmt.Errorf("reach clickhouse: %w", err)
	}
	return nil
}

func dial(ctx context.Context, cfg Config, database string, log *slog.Logger) (driver.Conn, error) {
	opts := &clickhouse.Options{
		Addr: cfg.Addr,
		Auth: clickhouse.Auth{
			Database: database,
			Username: cfg.Username,
			Password: cfg.Password.Reveal(),
		},
		DialTimeout:  cfg.DialTimeout,
		ReadTimeout:  cfg.ReadTimeout,
		MaxOpenConns: cfg.MaxOpenConns,
		MaxIdleConns: cfg.MaxOpenConns,
		Compression:  compression(cfg.Method()),
		// clickhouse-go warns on every connection that 18.16 is older than it supports, and logs
		// server exceptions that sluice handles and reports itself: keep only its errors.
		Logger: slog.New(minLevel{log.Handler(), slog.LevelError}).With(slog.String("component", "clickhouse")),
		ClientInfo: clickhouse.ClientInfo{Products: []struct {
			Name    string
			Version string
		}{{Name: "sluice", Version: "v1"}}},
	}
	password, err := config.ReadSecret(cfg.Password, cfg.PasswordFile, "CLICKHOUSE_PASSWORD_FILE")
	if err != nil {
		return nil, err
	}
	opts.Auth.Password = password.Reveal()
	if cfg.TLS {
		if opts.TLS, err = cfg.TLSFiles.Config(); err != nil {
			return nil, fmt.Errorf("SLUICE_CLICKHOUSE_TLS_…: %w", err)
		}
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if err := conn.Ping(pingCtx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("connect to clickhouse at %v: %w", cfg.Addr, err)
	}
	return conn, nil
}

func compression(name string) *clickhouse.Compression {
	switch name {
	case "none":
		return &clickhouse.Compression{Method: clickhouse.CompressionNone}
	case "zstd":
		return &clickhouse.Compression{Method: clickhouse.CompressionZSTD}
	default:
		return &clickhouse.Compression{Method: clickhouse.CompressionLZ4}
	}
}

func createDatabase(ctx context.Context, cfg Config, log *slog.Logger) error {
	conn, err := dial(ctx, cfg, "default", log)
	if err != nil {
		return err
	}
	defer conn.Close()
	// The name is a validated identifier; ClickHouse 18.16 takes it back-quoted as well.
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS `"+cfg.Database+"`"); err != nil {
		return fmt.Errorf("create database %s: %w", cfg.Database, err)
	}
	log.Info("created clickhouse database", "database", cfg.Database)
	return nil
}

func isUnknownDatabase(err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && ex.Code == codeUnknownDatabase
}

// minLevel drops records below its level.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(attrs), h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}
