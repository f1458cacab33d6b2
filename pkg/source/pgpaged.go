package source

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// pgPager reads one key range a page at a time, in key order, each page a query of its own that
// starts where the last one ended.
type pgPager struct {
	p    *pgSource
	pool *pgxpool.Pool
	keys *sluicev1.KeyRange
	size int
	// first and next are the page queries, from the start of the range and after a key ($2), $1
	// rows each, built on the first page from the columns the source has.
	first, next string
	// after is the key of the last row read, "" before the first page; read is how many rows.
	after   string
	started bool
	read    uint64
	done    bool
}

func (r *pgPager) More() bool { return !r.done }

func (r *pgPager) Then() *sluicev1.Task { return nil }

func (r *pgPager) Key(record json.RawMessage) (string, string) {
	return RecordKey(record, r.p.src.GetKey())
}

// Next reads the rows after the last one read, up to a page. The query asks for the last row
// again (key >= after) rather than past it, so that a second row with that key, which a
// strictly-greater query would skip for good, shows: a key that is not unique fails the task
// instead of losing rows.
func (r *pgPager) Next(ctx context.Context) (Read, bool, error) {
	if r.done {
		return Read{}, false, nil
	}
	var (
		records []json.RawMessage
		last    string
	)
	attempts, ferr := r.p.do(ctx, r.pool, func(ctx context.Context, q querier) error {
		if err := r.p.resolve(ctx, q); err != nil {
			return err
		}
		if r.first == "" {
			g, err := r.p.newRange(ctx, q, r.keys)
			if err != nil {
				return err
			}
			r.first, r.next = g.query()+" LIMIT $1", g.query(fmt.Sprintf("%s >= CAST($2::text AS %s)", g.key, g.typ))+" LIMIT $1"
		}
		records, last = records[:0], ""
		sql, args := r.first, []any{r.size}
		if r.started {
			sql, args = r.next, []any{r.size + 1, r.after}
		}
		rs, err := q.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		var (
			// row points into pgx's read buffer until the next row; the page's rows are copied
			// into one growing buffer rather than one allocation each.
			row   pgtype.DriverBytes
			arena []byte
			k     *string
			keys  keyCheck
		)
		keys.reset(r.p.src.GetKey(), r.after, r.started)
		_, err = pgx.ForEachRow(rs, []any{&k, &row}, func() error {
			if k == nil {
				return keys.null()
			}
			skip, err := keys.next([]byte(*k), len(records))
			if err != nil || skip {
				return err
			}
			if len(records) < r.size {
				from := len(arena)
				arena = append(arena, row...)
				records = append(records, json.RawMessage(arena[from:len(arena):len(arena)]))
				last = *k
			}
			return nil
		})
		return err
	})
	if ferr != nil {
		ferr.At = r.read
		return Read{}, false, ferr
	}
	at := r.read
	if len(records) < r.size {
		r.done = true
	}
	if len(records) > 0 {
		r.after, r.started = last, true
	}
	r.read += uint64(len(records))
	if len(records) == 0 {
		return Read{}, false, nil
	}
	return Read{Records: records, At: at, Attempts: attempts}, true, nil
}

// keyCheck finds, in the keys of the rows of a keyset read, what would make the read lose rows: a
// NULL key, which no keyset read can place, and a key that is not unique. A read from after asks
// for its row again (key >= after), and skips it.
type keyCheck struct {
	column  string
	after   string
	started bool
	prev    []byte
	repeat  bool
}

func (c *keyCheck) reset(column, after string, started bool) {
	*c = keyCheck{column: column, after: after, started: started, prev: c.prev[:0]}
}

// null is the error of a row without a key: one added since planning.
func (c *keyCheck) null() error {
	return &Error{Class: "null_key", Err: fmt.Errorf("a row has no value in the key column %q: keyset reads would skip it; choose a NOT NULL key", c.column)}
}

// next checks key, the key of the row after taken rows of this read, and reports whether the row is
// the last of the previous read, to skip.
func (c *keyCheck) next(key []byte, taken int) (skip bool, err error) {
	switch {
	case taken > 0 && bytes.Equal(key, c.prev), taken == 0 && c.repeat && string(key) == c.after:
		return false, &Error{Class: "duplicate_key", Err: fmt.Errorf("two rows have the key %q in column %q: keyset reads need a unique key", key, c.column)}
	case c.started && taken == 0 && !c.repeat && string(key) == c.after:
		c.repeat = true
		return true, nil
	}
	c.prev = append(c.prev[:0], key...)
	return false, nil
}
