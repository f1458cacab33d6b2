package source

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The connections of postgres sources (the process's pools, a connection reset when it returns),
// how PostgreSQL's errors are classified, and what of their text may leave the process.

// onlyEgress reports whether every failure that err joins is the egress policy's: a DSN with several
// hosts fails as egress only when the policy refused them all, not when one was also unreachable.
func onlyEgress(err error) bool {
	var refused *EgressError
	if errors.As(err, &refused) && refused == err {
		return true
	}
	switch e := err.(type) {
	case interface{ Unwrap() []error }:
		for _, inner := range e.Unwrap() {
			if !onlyEgress(inner) {
				return false
			}
		}
		return len(e.Unwrap()) > 0
	case interface{ Unwrap() error }:
		return e.Unwrap() != nil && onlyEgress(e.Unwrap())
	}
	return false
}

// pgError classifies a PostgreSQL error: what may pass (a lost connection, a server shutting down
// or out of connections, a timeout, a serialization failure) is retried, the rest is the job's.
func pgError(ctx context.Context, err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var refused *EgressError
	if errors.As(err, &refused) && onlyEgress(err) {
		return &Error{Class: "egress", Err: refused}
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		class := pe.Code[:2]
		out := &Error{Class: "bad_query", Err: errors.New(pgMessage(pe)), Diagnostic: pgDiagnostic(pe)}
		switch {
		case pe.Code == "57014":
			out.Class, out.Retryable = "timeout", true
		case class == "08" || class == "40" || class == "53" || class == "57" || class == "58" || pe.Code == "55P03":
			out.Class, out.Retryable = "postgres_unavailable", true
		case class == "28":
			out.Class = "unauthorized"
		}
		return out
	}
	if ctx.Err() != nil {
		return &Error{Class: "canceled", Err: ctx.Err()}
	}
	if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
		return &Error{Class: "timeout", Retryable: true, Err: errors.New("postgres: the query timed out")}
	}
	// A connection that failed or broke: the message names the host and user, never the password.
	return &Error{Class: "network", Retryable: true, Err: fmt.Errorf("postgres: %w", err)}
}

// pgObjectClasses are the SQLSTATE classes whose messages name objects, settings and the server's
// state, never a value of a row: connection, feature, transaction state, authorization, catalog,
// schema, rollback, syntax and access, resources, limits, object state, operator intervention, system.
var pgObjectClasses = map[string]bool{"08": true, "0A": true, "25": true, "28": true, "3D": true, "3F": true,
	"40": true, "42": true, "53": true, "54": true, "55": true, "57": true, "58": true}

// pgClassNames name the classes whose messages may quote a row's values (a value that does not
// parse, a key that is taken) or what a function's author wrote (RAISE).
var pgClassNames = map[string]string{"21": "cardinality violation", "22": "data exception", "23": "integrity constraint violation",
	"2F": "SQL routine exception", "38": "external routine exception", "39": "external routine invocation exception",
	"P0": "PL/pgSQL error", "XX": "internal error"}

// pgMessage is what a PostgreSQL error may say outside this process's log (a submit's answer, a dead
// letter that read tokens list): its SQLSTATE, and its message only where the message names objects
// rather than values. DETAIL, HINT and WHERE, which quote rows, never.
func pgMessage(pe *pgconn.PgError) string {
	class := pe.Code[:min(2, len(pe.Code))]
	if pgObjectClasses[class] {
		return fmt.Sprintf("postgres: %s (SQLSTATE %s)", pe.Message, pe.Code)
	}
	name := cmp.Or(pgClassNames[class], "error")
	return fmt.Sprintf("postgres: %s (SQLSTATE %s); its message may quote row values, so only this service's log has it", name, pe.Code)
}

// pgDiagnostic is the whole of a PostgreSQL error, for this process's log only.
func pgDiagnostic(pe *pgconn.PgError) string {
	out := pe.Message
	if pe.Detail != "" {
		out += "; DETAIL: " + pe.Detail
	}
	if pe.Where != "" {
		out += "; WHERE: " + pe.Where
	}
	return out
}

// Pools are a process's connection pools, one per database its sources read: a pool idle for a
// minute holds no connection.
type Pools struct {
	// MaxConns bounds each pool's connections: the tasks the process runs at once.
	MaxConns int32
	// Egress, when set, is where the pools may connect.
	Egress *Egress

	mu    sync.Mutex
	pools map[string]*pgxpool.Pool
}

func (ps *Pools) get(ctx context.Context, cfg *pgxpool.Config, timeout time.Duration) (*pgxpool.Pool, error) {
	id := cfg.ConnString()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p, ok := ps.pools[id]; ok {
		return p, nil
	}
	cfg.MaxConns = max(ps.MaxConns, 2)
	cfg.MinConns = 0
	cfg.MaxConnIdleTime = time.Minute
	cfg.ConnConfig.ConnectTimeout = timeout
	if ps.Egress != nil {
		// The policy resolves the name itself when it dials, and dials only what it allowed.
		cfg.ConnConfig.LookupFunc = func(_ context.Context, host string) ([]string, error) { return []string{host}, nil }
		cfg.ConnConfig.DialFunc = ps.Egress.DialContext
	}
	// Sessions read only, in UTC, so that timestamptz is written as RFC 3339 with +00:00.
	cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	cfg.ConnConfig.RuntimeParams["TimeZone"] = "UTC"
	cfg.ConnConfig.RuntimeParams["application_name"] = "sluice"
	// quoteLiteral relies on it (the default since PostgreSQL 9.1): a backslash is no escape.
	cfg.ConnConfig.RuntimeParams["standard_conforming_strings"] = "on"
	// A connection goes back to the pool as it came: the settings of its start (those above), no
	// advisory lock held. What cannot be reset is closed.
	cfg.AfterRelease = func(c *pgx.Conn) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, sql := range []string{"RESET ALL", "SELECT pg_advisory_unlock_all()"} {
			if _, err := c.Exec(ctx, sql); err != nil {
				return false
			}
		}
		return true
	}
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, &Error{Class: "config", Err: errors.New("source.dsn: cannot make a PostgreSQL connection pool from it")}
	}
	if ps.pools == nil {
		ps.pools = map[string]*pgxpool.Pool{}
	}
	ps.pools[id] = p
	return p, nil
}

// Close closes every pool.
func (ps *Pools) Close() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for id, p := range ps.pools {
		p.Close()
		delete(ps.pools, id)
	}
}
