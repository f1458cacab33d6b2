package chsink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sluicedata/sluice/pkg/chconn"
)

// OwnersTable is the table, in sluice's database, that records which job names write each sink
// table: a row per claim, written by the planner when it accepts a job. It is a plain MergeTree,
// which 18.16 and current releases create alike, and no sink may be named so.
const OwnersTable = "_sluice_owners"

// ErrOwned is a job refused a table that another job writes, the two not sharing it.
var ErrOwned = errors.New("the table is written by another job")

// Claim is a job's claim to write a table: the job's name, and whether it shares the table with
// the other jobs that say so (sink.shared).
type Claim struct {
	Job    string
	Shared bool
	// Cluster is the cluster the job's sink names (sink.cluster), "" for none.
	Cluster string
}

// Owner is a job name that claimed a table: since its first claim, shared as its last one says.
type Owner struct {
	Job    string
	Shared bool
	Since  time.Time
}

// ownersSQL creates the table of owners. On a cluster it is made on every server, one replicated
// table whose every replica holds every claim (one ZooKeeper path for all shards), so that a
// planner reads the same claims from whichever server it reaches.
func ownersSQL(database, cluster string) string {
	on, engine := "", "MergeTree"
	if cluster != "" {
		on = " ON CLUSTER `" + cluster + "`"
		engine = "ReplicatedMergeTree('/clickhouse/tables/sluice-owners/" + database + "/" + OwnersTable + "', '{replica}')"
	}
	return "CREATE TABLE IF NOT EXISTS `" + database + "`.`" + OwnersTable + "`" + on + " (\n" +
		"  `sink_table` String,\n  `job` String,\n  `shared` UInt8,\n  `claimed_at` DateTime,\n  `claimed_ns` UInt64\n" +
		") ENGINE = " + engine + "\nORDER BY (`sink_table`, `job`)"
}

// Owners returns the job names that claimed table in conn's database; none when no job did (or
// no job claimed any table yet).
func Owners(ctx context.Context, conn *chconn.Conn, table string) ([]Owner, error) {
	// Asked first, rather than read and failed: clickhouse-go logs every exception as an error.
	switch engine, err := engineOf(ctx, conn, OwnersTable); {
	case err != nil:
		return nil, err
	case engine == "":
		return nil, nil // nothing claimed yet
	}
	rows, err := conn.Query(ctx, "SELECT job, min(claimed_at), argMax(shared, claimed_ns) FROM `"+conn.Database+"`.`"+OwnersTable+
		"` WHERE sink_table = ? GROUP BY job", table)
	if err != nil {
		return nil, fmt.Errorf("read the owners of %s.%s: %w", conn.Database, table, err)
	}
	defer rows.Close()
	var out []Owner
	for rows.Next() {
		var o Owner
		var shared uint8
		if err := rows.Scan(&o.Job, &o.Since, &shared); err != nil {
			return nil, fmt.Errorf("read the owners of %s.%s: %w", conn.Database, table, err)
		}
		o.Shared = shared != 0
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the owners of %s.%s: %w", conn.Database, table, err)
	}
	return out, nil
}

// writers are the owners that may write the table: in the order of their first claims (then by
// name), an owner is taken when it is the first, or when it and every one taken before it share
// the table. Every planner reads the same claims the same way, so that of two jobs that claimed one
// table at once, the same one wins everywhere.
func writers(owners []Owner) []Owner {
	sorted := slices.Clone(owners)
	slices.SortFunc(sorted, func(a, b Owner) int { return cmp.Or(a.Since.Compare(b.Since), cmp.Compare(a.Job, b.Job)) })
	var out []Owner
	for _, o := range sorted {
		if len(out) == 0 || o.Shared && !slices.ContainsFunc(out, func(w Owner) bool { return !w.Shared }) {
			out = append(out, o)
		}
	}
	return out
}

// CheckClaim reports whether c may write a table that owners claimed: nil when it writes it
// already as it says, when no other job does, or when c and every job that writes it share it;
// an error wrapping ErrOwned that names them otherwise. A claim that would take the table from a
// job that writes it now (a shared table claimed alone) is refused too.
func CheckClaim(table string, owners []Owner, c Claim) error {
	before := writers(owners)
	next := slices.Clone(owners)
	if i := slices.IndexFunc(next, func(o Owner) bool { return o.Job == c.Job }); i >= 0 {
		next[i].Shared = c.Shared
	} else {
		next = append(next, Owner{Job: c.Job, Shared: c.Shared, Since: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)})
	}
	after := writers(next)
	others := func(ws []Owner) []string {
		var names []string
		for _, w := range ws {
			if w.Job != c.Job {
				names = append(names, w.Job)
			}
		}
		return names
	}
	if !slices.ContainsFunc(after, func(w Owner) bool { return w.Job == c.Job }) {
		names := strings.Join(others(before), ", ")
		if slices.ContainsFunc(before, func(w Owner) bool { return !w.Shared }) {
			return fmt.Errorf("%w: table %s is written by job %s, which does not share it (jobs share a table when each says shared: true in its sink)",
				ErrOwned, table, names)
		}
		return fmt.Errorf("%w: table %s is shared by job %s; job %s may write it too with shared: true in its sink",
			ErrOwned, table, names, c.Job)
	}
	kept := others(after)
	if lost := slices.DeleteFunc(others(before), func(n string) bool { return slices.Contains(kept, n) }); len(lost) > 0 {
		return fmt.Errorf("%w: table %s is shared with job %s: job %s must keep shared: true in its sink",
			ErrOwned, table, strings.Join(lost, ", "), c.Job)
	}
	return nil
}

// CheckOwner reports whether the job of claim c may write table (with the rows of sink; nil: the
// raw landing rows), as the owners recorded in conn's database say (CheckClaim). A raw landing
// table created before sluice kept job names cannot be shared: it orders its rows by key alone,
// and jobs would overwrite each other's rows (ErrIncompatibleTable).
func CheckOwner(ctx context.Context, conn *chconn.Conn, table string, sink *Sink, c Claim) error {
	if sink == nil && c.Shared {
		cols, err := describe(ctx, conn, table)
		if err != nil {
			return err
		}
		if len(cols) > 0 && !slices.ContainsFunc(cols, func(tc tableColumn) bool { return tc.name == RawJobName }) {
			return fmt.Errorf("%w: %s.%s has no column %s (sluice created it before it kept job names): it orders its rows by key alone, "+
				"so jobs sharing it would overwrite each other's rows; land the shared jobs in a new table", ErrIncompatibleTable, conn.Database, table, RawJobName)
		}
	}
	owners, err := Owners(ctx, conn, table)
	if err != nil {
		return err
	}
	return CheckClaim(table, owners, c)
}

// ClaimTable records that the job of c writes table, after CheckClaim: a claim is written when the
// job has none or changes whether it shares the table, and the claims are read again after it, so
// that of two jobs that claimed a table at once only the one that all planners take as its writer
// is accepted. It creates the table of owners when it is missing.
func ClaimTable(ctx context.Context, conn *chconn.Conn, table string, c Claim) error {
	owners, err := Owners(ctx, conn, table)
	if err != nil {
		return err
	}
	if err := CheckClaim(table, owners, c); err != nil {
		return err
	}
	if slices.ContainsFunc(owners, func(o Owner) bool { return o.Job == c.Job && o.Shared == c.Shared }) {
		return nil
	}
	// Made once, when missing: on a cluster its DDL waits for every server.
	switch engine, err := engineOf(ctx, conn, OwnersTable); {
	case err != nil:
		return err
	case engine == "":
		if err := conn.Exec(ctx, ownersSQL(conn.Database, conn.Cluster)); err != nil {
			return fmt.Errorf("create %s.%s: %w", conn.Database, OwnersTable, err)
		}
	}
	shared := 0
	if c.Shared {
		shared = 1
	}
	// INSERT … SELECT: no data blocks from the client. claimed_at is the server's clock, the
	// same for every planner, which orders the first claims of jobs; claimed_ns orders the claims
	// of one job (sharing, then not), which come from one planner within the same second too.
	if err := conn.Exec(ctx, "INSERT INTO `"+conn.Database+"`.`"+OwnersTable+"` (sink_table, job, shared, claimed_at, claimed_ns) "+
		"SELECT ?, ?, toUInt8(?), now(), toUInt64(?)", table, c.Job, shared, uint64(time.Now().UnixNano())); err != nil {
		return fmt.Errorf("claim %s.%s for job %s: %w", conn.Database, table, c.Job, err)
	}
	if owners, err = Owners(ctx, conn, table); err != nil {
		return err
	}
	if !slices.ContainsFunc(writers(owners), func(w Owner) bool { return w.Job == c.Job }) {
		others := slices.DeleteFunc(owners, func(o Owner) bool { return o.Job == c.Job })
		if err := CheckClaim(table, others, c); err != nil {
			return err
		}
		return fmt.Errorf("%w: table %s was claimed by another job at the same time", ErrOwned, table)
	}
	return nil
}
