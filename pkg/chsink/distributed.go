package chsink

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/sluicedata/sluice/pkg/chconn"
)

// distributedLayout is what the engine of an existing sink table on cluster says of where its
// rows go, or why the loader cannot write them there.
func distributedLayout(database, table, cluster, engine, full string) (*clusterTable, error) {
	if engine != engineDistributed {
		return nil, fmt.Errorf("%s.%s is a %s table: %w (sluice makes them, named %s and %s%s, when the table is missing)",
			database, table, engine, ErrNotDistributed, table, table, LocalSuffix)
	}
	d, err := parseDistributed(full)
	if err != nil {
		return nil, fmt.Errorf("%w: %s.%s: %v", ErrIncompatibleTable, database, table, err)
	}
	if d.cluster != cluster {
		return nil, fmt.Errorf("%w: %s.%s is a Distributed table over cluster %s, and sluice writes cluster %s (SLUICE_CLICKHOUSE_CLUSTER)",
			ErrIncompatibleTable, database, table, d.cluster, cluster)
	}
	if d.database != database {
		return nil, fmt.Errorf("%w: %s.%s is a Distributed table over %s.%s, in another database than sluice's %s",
			ErrIncompatibleTable, database, table, d.database, d.local, database)
	}
	return &clusterTable{local: d.local, key: d.key, schemas: map[string]*Schema{}}, nil
}

// sortingColumn is the first column of table's sorting key ("" when it has none that is a plain
// column): what the loader shards a Distributed table's rows by when its own key is rand() or
// none, so that the rows of one key replace each other on one shard.
func sortingColumn(ctx context.Context, conn *chconn.Conn, table string) (string, error) {
	var key string
	if err := conn.QueryRow(ctx, "SELECT sorting_key FROM system.tables WHERE database = ? AND name = ?", conn.Database, table).Scan(&key); err != nil {
		return "", fmt.Errorf("read the sorting key of %s.%s: %w", conn.Database, table, err)
	}
	first, _, _ := strings.Cut(strings.Trim(key, "() "), ",")
	first = strings.Trim(strings.TrimSpace(first), "`")
	if !legalTable.MatchString(first) {
		return "", nil
	}
	return first, nil
}

// engineFull returns the engine of table in conn's database and its full definition ("", "" when
// it does not exist).
func engineFull(ctx context.Context, conn *chconn.Conn, table string) (engine, full string, err error) {
	rows, err := conn.Query(ctx, "SELECT engine, engine_full FROM system.tables WHERE database = ? AND name = ?", conn.Database, table)
	if err != nil {
		return "", "", fmt.Errorf("read the engine of %s.%s: %w", conn.Database, table, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := rows.Scan(&engine, &full); err != nil {
			return "", "", fmt.Errorf("read the engine of %s.%s: %w", conn.Database, table, err)
		}
	}
	if err := rows.Err(); err != nil {
		return "", "", fmt.Errorf("read the engine of %s.%s: %w", conn.Database, table, err)
	}
	return engine, full, nil
}

// distributed is what a Distributed engine's arguments say: the cluster, the local tables, and
// the column its sharding key hashes ("" for rand() or no key).
type distributed struct{ cluster, database, local, key string }

var (
	// distributedArgs reads Distributed(cluster, database, table[, sharding key[, policy]]), the
	// names quoted with ' or ` or bare.
	distributedArgs = regexp.MustCompile("^Distributed\\(\\s*['`]?([A-Za-z_][A-Za-z0-9_]*)['`]?\\s*,\\s*['`]?([A-Za-z_][A-Za-z0-9_]*)['`]?\\s*,\\s*" +
		"['`]?([A-Za-z_][A-Za-z0-9_]*)['`]?\\s*(?:,\\s*(.*?)\\s*)?\\)(?:\\s+SETTINGS.*)?$")
	cityHashOf = regexp.MustCompile("^cityHash64\\(\\s*`?([A-Za-z_][A-Za-z0-9_]*)`?\\s*\\)$")
	policyArg  = regexp.MustCompile(`\s*,\s*'[^']*'$`)
)

// parseDistributed reads a Distributed table's engine_full; a sharding key other than
// cityHash64(column) or rand() is refused with why.
func parseDistributed(full string) (distributed, error) {
	m := distributedArgs.FindStringSubmatch(full)
	if m == nil {
		return distributed{}, fmt.Errorf("cannot read its engine %q", full)
	}
	d := distributed{cluster: m[1], database: m[2], local: m[3]}
	key := policyArg.ReplaceAllString(m[4], "")
	switch k := cityHashOf.FindStringSubmatch(key); {
	case key == "" || key == "rand()":
		// Any shard takes any row: the loader routes by the sorting key's first column, so
		// that a key's rows replace each other on one shard.
	case k != nil:
		d.key = k[1]
	default:
		return distributed{}, fmt.Errorf("its sharding key %s is not one the loader computes: cityHash64(column) or rand()", key)
	}
	return d, nil
}
