package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/jobspec"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// pgSource is a table or a query of a PostgreSQL database. The planner splits it into ranges of
// its key, of about as many rows each; an extractor reads a range in key order by keyset
// pagination, each page a query that starts where the last one ended. PostgreSQL itself writes
// each row as a JSON object (row_to_json), with numeric as a string and bytea as base64, so no
// value passes through a Go type on the way.
type pgSource struct {
	src *sluicev1.PostgresSource
	env Env
	// An incremental run reads the rows whose cursor column is at or after since; cursorType is
	// that column's type, asked of the database before the first query.
	cursor, since, cursorType string
	// paged reads each range in queries of a page each rather than one COPY.
	paged bool
}

func newPostgres(src *sluicev1.PostgresSource, in *sluicev1.Incremental, env Env) *pgSource {
	p := &pgSource{src: src, env: env}
	if in.GetSince() != "" {
		p.cursor, p.since = in.GetCursorField(), in.GetSince()
	}
	return p
}

// Quantile sampling: a source of more rows than sampleAbove plans from a random sample of about
// sampleRows of them rather than sorting every key.
const (
	sampleAbove = 5_000_000
	sampleRows  = 1_000_000
	// skewed is how much fuller than the average the fullest range of equal key widths may be
	// before the planner takes quantiles instead.
	skewed = 1.25
)

func (p *pgSource) Limits() Limits {
	host := ""
	if cfg, err := p.config(); err == nil {
		host = net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))
	}
	return Limits{RateLimit: p.src.GetRateLimit(), Host: host, Concurrency: int(p.src.GetConcurrency())}
}

func (p *pgSource) policy() Policy {
	pol := Policy{MaxRetries: int(p.src.GetMaxRetries()), Backoff: p.env.Backoff, Deadline: p.env.PageDeadline,
		Timeout: p.src.GetTimeout().AsDuration()}
	if pol.Timeout <= 0 {
		pol.Timeout = jobspec.DefaultTimeout
	}
	return pol
}

// config resolves the DSN reference in this process and parses it. Its errors never quote the DSN.
func (p *pgSource) config() (*pgxpool.Config, error) {
	ref := p.src.GetDsn()
	dsn, err := jobspec.Expand("source.dsn", ref, p.env.Lookup)
	if err != nil {
		return nil, &Error{Class: "config", Err: err}
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, &Error{Class: "config", Err: errors.New("source.dsn does not parse as a PostgreSQL connection string")}
	}
	name := strings.TrimSuffix(strings.TrimPrefix(ref, "${"), "}")
	hosts := []string{cfg.ConnConfig.Host}
	for _, f := range cfg.ConnConfig.Fallbacks {
		hosts = append(hosts, f.Host)
	}
	for _, h := range hosts {
		if p.env.Allowed != nil && !p.env.Allowed(name, h) {
			return nil, &Error{Class: "config", Err: refusedSecret(name, h)}
		}
	}
	return cfg, nil
}

// pool is this process's connection pool for the source's database.
func (p *pgSource) pool(ctx context.Context) (*pgxpool.Pool, error) {
	if p.env.Postgres == nil {
		return nil, &Error{Class: "config", Err: errors.New("this process reads no PostgreSQL sources")}
	}
	cfg, err := p.config()
	if err != nil {
		return nil, err
	}
	return p.env.Postgres.get(ctx, cfg, p.policy().Timeout)
}

// relation is the FROM item the queries read, named q: the table or the query, and for an
// incremental run only its rows from since on.
func (p *pgSource) relation() string {
	if p.since == "" {
		return p.base()
	}
	return fmt.Sprintf("(SELECT q.* FROM %s WHERE q.%s >= CAST(%s AS %s)) AS q", p.base(), pgx.Identifier{p.cursor}.Sanitize(),
		quoteLiteral(p.since), p.cursorType)
}

func (p *pgSource) base() string {
	if t := p.src.GetTable(); t != "" {
		parts := strings.Split(t, ".")
		return pgx.Identifier(parts).Sanitize() + " AS q"
	}
	return "(" + p.src.GetQuery() + ") AS q"
}

// resolve asks the type of an incremental run's cursor column, once.
func (p *pgSource) resolve(ctx context.Context, q querier) error {
	if p.since == "" || p.cursorType != "" {
		return nil
	}
	oid, err := keyType(ctx, q, p.base(), "q."+pgx.Identifier{p.cursor}.Sanitize())
	if err != nil {
		return err
	}
	p.cursorType, err = typeName(ctx, q, oid)
	return err
}

// typeName is how SQL names the type of oid, for a CAST to it.
func typeName(ctx context.Context, q querier, oid uint32) (string, error) {
	var name string
	err := q.QueryRow(ctx, "SELECT format_type($1::oid, NULL)", oid).Scan(&name)
	return name, err
}

func (p *pgSource) key() string { return "q." + pgx.Identifier{p.src.GetKey()}.Sanitize() }

// querier is what the statements of one attempt run on: a read-only transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// do runs the statements of fn under the source's retries, each attempt bounded by its timeout and
// in a transaction of its own that is read only from its BEGIN and rolled back at its end: nothing
// a query does can make the transaction, or later ones on its connection, write (a set_config of
// the session's defaults is undone by the rollback, and a read-only transaction cannot be made
// read-write once it has run a query).
func (p *pgSource) do(ctx context.Context, pool *pgxpool.Pool, fn func(ctx context.Context, q querier) error) (int, *Error) {
	return p.retry(ctx, func(ctx context.Context) error { return readOnly(ctx, pool, fn) })
}

// retry runs attempt under the source's retries, each attempt bounded by its timeout, and
// classifies what the last one failed with.
func (p *pgSource) retry(ctx context.Context, attempt func(ctx context.Context) error) (int, *Error) {
	pol := p.policy()
	var last *Error
	attempts, err := p.env.Fetcher.Retry.Do(ctx, "query", delivery.Policy{Backoff: pol.Backoff, MaxAttempts: pol.MaxRetries + 1, Deadline: pol.Deadline},
		func(int) error {
			actx, cancel := context.WithTimeout(ctx, pol.Timeout)
			defer cancel()
			err := attempt(actx)
			if err == nil {
				last = nil
				return nil
			}
			last = pgError(ctx, err)
			return last.classified()
		})
	if err == nil {
		return attempts, nil
	}
	if last == nil || ctx.Err() != nil {
		last = &Error{Class: "canceled", Err: ctx.Err()}
	}
	last.Attempts = attempts
	return attempts, last
}

// readOnly runs fn in a read-only transaction, rolled back at its end.
func readOnly(ctx context.Context, pool *pgxpool.Pool, fn func(ctx context.Context, q querier) error) error {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return err
	}
	defer func() {
		// A rollback that cannot be sent closes the connection: it never goes back to the pool
		// with the transaction open.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tx.Rollback(rctx)
	}()
	return fn(ctx, tx)
}

// pgExtent is what planning found: the bounds between the ranges, as the key's text.
type pgExtent struct {
	Bounds []string `json:"bounds"`
	Rows   int64    `json:"rows"`
}

// Plan splits the key's values into at most tasks ranges of about as many rows: between equal
// widths of an integer key, or between quantiles when such ranges would be uneven (or the key is
// not an integer). The first range has no lower bound and the last no upper one, so that a row
// outside the keys seen at planning is still read.
func (p *pgSource) Plan(ctx context.Context, tasks int) (Plan, error) {
	pool, err := p.pool(ctx)
	if err != nil {
		return Plan{}, err
	}
	key := p.key()
	var (
		rows, nulls int64
		lo, hi      *string
		oid         uint32
	)
	if _, ferr := p.do(ctx, pool, func(ctx context.Context, q querier) error {
		if err := p.resolve(ctx, q); err != nil {
			return err
		}
		rel := p.relation()
		oid, err = keyType(ctx, q, rel, key)
		if err != nil {
			return err
		}
		return q.QueryRow(ctx, fmt.Sprintf("SELECT count(*), count(*) - count(%[1]s), min(%[1]s)::text, max(%[1]s)::text FROM %[2]s", key, rel)).
			Scan(&rows, &nulls, &lo, &hi)
	}); ferr != nil {
		return Plan{}, ferr
	}
	if nulls > 0 {
		return Plan{}, &Error{Class: "null_key", Err: fmt.Errorf("%d rows have no value in the key column %q: keyset reads would skip them; choose a NOT NULL key", nulls, p.src.GetKey())}
	}
	n := int64(max(tasks, 1))
	ext := pgExtent{Rows: rows}
	if rows > 0 && n > 1 {
		n = min(n, rows)
		if integerOID(oid) {
			ext.Bounds, err = p.widths(ctx, pool, *lo, *hi, n, rows)
			if err != nil {
				return Plan{}, err
			}
		}
		if ext.Bounds == nil {
			if ext.Bounds, err = p.quantiles(ctx, pool, n, rows); err != nil {
				return Plan{}, err
			}
		}
	}
	extent, _ := json.Marshal(ext)
	return p.planOf(ext, extent), nil
}

// Replan plans again from the bounds that Plan found.
func (p *pgSource) Replan(extent []byte, _ int) (Plan, error) {
	var ext pgExtent
	if err := json.Unmarshal(extent, &ext); err != nil {
		return Plan{}, &Error{Class: "bad_task", Err: fmt.Errorf("the extent of a postgres source is its bounds, not %q", extent)}
	}
	return p.planOf(ext, extent), nil
}

// planOf is the ranges between bounds. Its Expected is -1: a table may change between planning and
// reading, and each range is read to its end.
func (p *pgSource) planOf(ext pgExtent, extent []byte) Plan {
	plan := Plan{Expected: -1, Extent: extent}
	start := ""
	for _, b := range append(ext.Bounds, "") {
		plan.Slices = append(plan.Slices, &sluicev1.Task{Slice: &sluicev1.Task_Keys{Keys: &sluicev1.KeyRange{Start: start, End: b}}})
		start = b
	}
	return plan
}

// widths returns the n-1 bounds of equal widths between the integers lo and hi, or nil when the
// rows fill those ranges unevenly.
func (p *pgSource) widths(ctx context.Context, pool *pgxpool.Pool, lo, hi string, n, rows int64) ([]string, error) {
	l, ok1 := new(big.Int).SetString(lo, 10)
	h, ok2 := new(big.Int).SetString(hi, 10)
	if !ok1 || !ok2 {
		return nil, nil
	}
	span := new(big.Int).Sub(h, l)
	span.Add(span, big.NewInt(1))
	if span.Cmp(big.NewInt(n)) < 0 {
		return nil, nil
	}
	// Rows per range, counted in numeric so that no key overflows.
	counts := make([]int64, n)
	sql := fmt.Sprintf("SELECT floor((%s::numeric - $1::text::numeric) * $2::bigint / $3::text::numeric)::bigint AS r, count(*) FROM %s GROUP BY 1", p.key(), p.relation())
	if _, ferr := p.do(ctx, pool, func(ctx context.Context, q querier) error {
		clear(counts)
		rs, err := q.Query(ctx, sql, lo, n, span.String())
		if err != nil {
			return err
		}
		var r, c int64
		_, err = pgx.ForEachRow(rs, []any{&r, &c}, func() error {
			if r >= 0 && r < n {
				counts[r] += c
			}
			return nil
		})
		return err
	}); ferr != nil {
		return nil, ferr
	}
	fullest := int64(0)
	for _, c := range counts {
		fullest = max(fullest, c)
	}
	if float64(fullest) > skewed*float64(rows)/float64(n) {
		return nil, nil
	}
	bounds := make([]string, 0, n-1)
	for i := int64(1); i < n; i++ {
		b := new(big.Int).Mul(span, big.NewInt(i))
		b.Quo(b, big.NewInt(n))
		bounds = append(bounds, b.Add(b, l).String())
	}
	return bounds, nil
}

// quantiles returns the n-1 bounds between ranges of about rows/n rows each: the key's quantiles,
// over a random sample when the source is large.
func (p *pgSource) quantiles(ctx context.Context, pool *pgxpool.Pool, n, rows int64) ([]string, error) {
	fractions := make([]float64, n-1)
	for i := range fractions {
		fractions[i] = float64(i+1) / float64(n)
	}
	where, args := "", []any{fractions}
	if rows > sampleAbove {
		where, args = " WHERE random() < $2", append(args, float64(sampleRows)/float64(rows))
	}
	sql := fmt.Sprintf("SELECT (percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY %s))::text[] FROM %s%s", p.key(), p.relation(), where)
	var bounds []*string
	if _, ferr := p.do(ctx, pool, func(ctx context.Context, q querier) error { return q.QueryRow(ctx, sql, args...).Scan(&bounds) }); ferr != nil {
		return nil, ferr
	}
	out := make([]string, 0, len(bounds))
	for _, b := range bounds {
		// "" is no bound (KeyRange's unbounded end): the ranges below it hold the empty key.
		if b != nil && *b != "" && (len(out) == 0 || out[len(out)-1] != *b) {
			out = append(out, *b)
		}
	}
	return out, nil
}

// keyType is the type of the key column, asked without reading a row.
func keyType(ctx context.Context, q querier, rel, key string) (uint32, error) {
	rs, err := q.Query(ctx, fmt.Sprintf("SELECT %s FROM %s LIMIT 0", key, rel))
	if err != nil {
		return 0, err
	}
	fields := rs.FieldDescriptions()
	rs.Close()
	if err := rs.Err(); err != nil {
		return 0, err
	}
	return fields[0].DataTypeOID, nil
}

// Type OIDs that the reader writes differently from PostgreSQL's own JSON.
const (
	oidInt2         = 21
	oidInt4         = 23
	oidInt8         = 20
	oidNumeric      = 1700
	oidNumericArray = 1231
	oidBytea        = 17
)

func integerOID(oid uint32) bool { return oid == oidInt2 || oid == oidInt4 || oid == oidInt8 }

// Open returns a reader of a key range: one COPY of the whole range, streamed, or queries of a page
// each for a source with a rate limit (and when p.paged says so: the reference the COPY's records
// are tested against).
func (p *pgSource) Open(task *sluicev1.Task) (Reader, error) {
	keys := task.GetKeys()
	if keys == nil {
		return nil, &Error{Class: "bad_task", Err: fmt.Errorf("a postgres source does not read a slice of %T", task.GetSlice())}
	}
	// The pool connects on first use: getting it here resolves and checks the DSN once per task,
	// not per page.
	pool, err := p.pool(context.Background())
	if err != nil {
		return nil, err
	}
	size := int(p.src.GetBatchSize())
	if size <= 0 {
		size = jobspec.DefaultBatchSize
	}
	// A rate limit paces queries, and a task waiting for it gives its slot back: read such a source
	// in queries of a page, each its own connection, rather than one COPY that holds one meanwhile.
	if p.paged || p.src.GetRateLimit() > 0 {
		return &pgPager{p: p, pool: pool, keys: keys, size: size}, nil
	}
	if m := p.env.Fetcher.MaxRecords; m > 0 {
		size = min(size, m)
	}
	return &pgCopier{p: p, pool: pool, keys: keys, size: size, maxBytes: int(p.env.Fetcher.MaxBody)}, nil
}

// pgRange is what the reads of one key range select, in key order: each row's key as text and
// the row as a JSON object, its columns as PostgreSQL's JSON writes them but numeric as a string
// (JSON numbers lose its digits in most readers) and bytea as base64.
type pgRange struct {
	rel, key string
	// typ is the key's type, which the bounds are cast to.
	typ   string
	cols  []string
	where []string
}

// newRange asks the database for the columns of the source and builds the reads of keys.
func (p *pgSource) newRange(ctx context.Context, q querier, keys *sluicev1.KeyRange) (*pgRange, error) {
	rel, key := p.relation(), p.key()
	rs, err := q.Query(ctx, fmt.Sprintf("SELECT * FROM %s LIMIT 0", rel))
	if err != nil {
		return nil, err
	}
	fields := rs.FieldDescriptions()
	rs.Close()
	if err := rs.Err(); err != nil {
		return nil, err
	}
	var (
		cols    []string
		keyOID  uint32
		hasKey  bool
		columns = map[string]bool{}
	)
	for _, f := range fields {
		if columns[f.Name] {
			return nil, &Error{Class: "bad_query", Err: fmt.Errorf("the source has two columns named %q: name them apart", f.Name)}
		}
		columns[f.Name] = true
		c := "q." + pgx.Identifier{f.Name}.Sanitize()
		switch f.DataTypeOID {
		case oidNumeric:
			c += "::text"
		case oidNumericArray:
			c += "::text[]"
		case oidBytea:
			c = "translate(encode(" + c + ", 'base64'), E'\\n', '')"
		}
		cols = append(cols, c+" AS "+pgx.Identifier{f.Name}.Sanitize())
		if f.Name == p.src.GetKey() {
			keyOID, hasKey = f.DataTypeOID, true
		}
	}
	if !hasKey {
		return nil, &Error{Class: "bad_query", Err: fmt.Errorf("the source has no column %q, its key", p.src.GetKey())}
	}
	typ, err := typeName(ctx, q, keyOID)
	if err != nil {
		return nil, err
	}
	g := &pgRange{rel: rel, key: key, typ: typ, cols: cols, where: []string{"TRUE"}}
	if keys.GetStart() != "" {
		g.where = append(g.where, key+" >= "+g.cast(keys.GetStart()))
	}
	if keys.GetEnd() != "" {
		g.where = append(g.where, key+" < "+g.cast(keys.GetEnd()))
	}
	return g, nil
}

func (g *pgRange) cast(v string) string { return "CAST(" + quoteLiteral(v) + " AS " + g.typ + ")" }

// query selects the rows of the range that also meet more, in key order.
func (g *pgRange) query(more ...string) string {
	return fmt.Sprintf("SELECT %s::text, row_to_json(sluice_row.*)::text FROM %s CROSS JOIN LATERAL (SELECT %s) AS sluice_row WHERE %s ORDER BY %s",
		g.key, g.rel, strings.Join(g.cols, ", "), strings.Join(append(g.where[:len(g.where):len(g.where)], more...), " AND "), g.key)
}

// quoteLiteral writes s as an SQL string literal.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
