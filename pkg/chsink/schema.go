package chsink

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Lineage is where a column's value comes from when it is not a field of the record: the record's
// key, the record whole, or where and when sluice read it.
type Lineage string

// The lineage a column may take.
const (
	FromKey         Lineage = "key"
	FromRecord      Lineage = "record"
	FromJob         Lineage = "job"
	FromTask        Lineage = "task"
	FromPartition   Lineage = "partition"
	FromOffset      Lineage = "offset"
	FromExtractedAt Lineage = "extracted_at"
	FromLoadedAt    Lineage = "loaded_at"
	// FromVersion is the row's version (RowVersion): by which ReplacingMergeTree keeps the newest
	// row of a key.
	FromVersion Lineage = "version"
	// FromSource is the job's name, the same for every record of the job and of its runs.
	FromSource Lineage = "source"
)

// lineageTypes are the types lineage columns have.
var lineageTypes = map[Lineage]string{
	FromKey: "String", FromRecord: "String", FromJob: "String", FromTask: "String", FromPartition: "Int32",
	FromOffset: "Int64", FromExtractedAt: "DateTime", FromLoadedAt: "DateTime", FromVersion: "UInt64",
	FromSource: "String",
}

// Column is one column of a sink table: its name, its ClickHouse type, and where its value comes
// from, a dotted path into the record (Path) or lineage, and what a value that does not fit does.
type Column struct {
	Name    string
	Type    *Type
	Path    string
	Lineage Lineage
	OnError Policy
}

// Schema is a sink table: its columns in insert order, the columns it is ordered (and so collapsed)
// by, and its version column, by which ReplacingMergeTree keeps the latest row of each order key.
// DDL, the INSERT column list, the column builders and the check of an existing table all derive
// from it. Source is the value of source lineage; OnNewField says what a record field that no column
// takes does (Discard when empty).
type Schema struct {
	Columns    []Column
	OrderBy    []string
	Version    string
	Source     string
	OnNewField FieldPolicy
}

// Raw is the raw landing table: one row per record, its key and payload with their lineage,
// collapsed per job name and key to the newest version, so that the jobs that share a table keep
// each their own rows.
var Raw = mustSchema(Schema{Columns: []Column{
	{Name: "key", Lineage: FromKey}, {Name: "payload", Lineage: FromRecord}, {Name: "job_id", Lineage: FromJob},
	{Name: RawJobName, Lineage: FromSource},
	{Name: "task_id", Lineage: FromTask}, {Name: "kafka_partition", Lineage: FromPartition}, {Name: "kafka_offset", Lineage: FromOffset},
	{Name: "extracted_at", Lineage: FromExtractedAt}, {Name: "loaded_at", Lineage: FromLoadedAt}, {Name: "version", Lineage: FromVersion},
}, OrderBy: []string{"key", RawJobName}, Version: "version"})

// RawJobName is the raw landing table's column of the job's name, part of its sorting key.
const RawJobName = "job_name"

// rawByKey is the raw landing table as sluice created it before it kept job names: ordered by key
// alone. Such a table takes the rows of one job name as before; jobs cannot share it.
var rawByKey = mustSchema(Schema{Columns: slices.DeleteFunc(slices.Clone(Raw.Columns), func(c Column) bool { return c.Name == RawJobName }),
	OrderBy: []string{"key"}, Version: "version"})

// versionEpoch is where RowVersion counts the planning of jobs from, and offsetBits how many of a
// version's low bits hold the raw-topic offset.
var versionEpoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

const offsetBits = 34

// RowVersion is the version of a row: the time its job was planned (to the second, from 2020 on:
// the high 30 bits), then the record's offset on the raw topic (the low 34 bits, saturated). It
// comes from where the record is, not from any extractor's clock: a key's records land on one
// raw partition (the Kafka key is the record key), so within a run of a job a record extracted
// again (a task run again, a redelivered page) is at a later offset and wins; a later run of the
// job wins over an earlier one whatever their offsets (a raw topic recreated or given more
// partitions restarts offsets), and a dead letter replayed from an older run does not overwrite a
// newer run's row. The planning time is the planner's, fixed once per run. Versions of this form
// exceed the extraction-time nanoseconds that sluice wrote before, so that rows loaded since win
// over rows loaded before.
func RowVersion(planned time.Time, offset int64) uint64 {
	var run uint64
	if s := planned.Unix() - versionEpoch.Unix(); !planned.IsZero() && s > 0 {
		run = min(uint64(s), 1<<(64-offsetBits)-1)
	}
	return run<<offsetBits | uint64(min(max(offset, 0), 1<<offsetBits-1))
}

func mustSchema(s Schema) *Schema {
	if err := s.init(); err != nil {
		panic(err)
	}
	return &s
}

var columnName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]{0,127}$`)

// NewSchema checks a schema and fills in the types of its lineage columns.
func NewSchema(s Schema) (*Schema, error) {
	if err := s.init(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *Schema) init() error {
	var problems []string
	seen := map[string]*Column{}
	for i := range s.Columns {
		c := &s.Columns[i]
		switch {
		case !columnName.MatchString(c.Name):
			problems = append(problems, fmt.Sprintf("column %q: a name is letters, digits and '_', not starting with a digit", c.Name))
		case seen[c.Name] != nil:
			problems = append(problems, fmt.Sprintf("column %s: named twice", c.Name))
		}
		seen[c.Name] = c
		switch {
		case c.Lineage != "" && c.Path != "":
			problems = append(problems, fmt.Sprintf("column %s: a value comes from a field or from lineage, not both", c.Name))
		case c.Lineage != "":
			typ, ok := lineageTypes[c.Lineage]
			if !ok {
				problems = append(problems, fmt.Sprintf("column %s: no lineage %q", c.Name, c.Lineage))
				continue
			}
			if c.Type == nil {
				c.Type, _ = ParseType(typ)
			} else if !lineageTakes(c.Lineage, c.Type) {
				problems = append(problems, fmt.Sprintf("column %s: $%s values are %s, not %s", c.Name, c.Lineage, typ, c.Type.Name))
			}
		case c.Path == "" || slices.Contains(strings.Split(c.Path, "."), ""):
			problems = append(problems, fmt.Sprintf("column %s: from must be a dotted path, such as id or meta.id", c.Name))
		case c.Type == nil:
			problems = append(problems, fmt.Sprintf("column %s: a type is required", c.Name))
		}
	}
	if len(s.OrderBy) == 0 {
		problems = append(problems, "order_by: at least one column")
	}
	for _, name := range s.OrderBy {
		switch c := seen[name]; {
		case c == nil:
			problems = append(problems, fmt.Sprintf("order_by: no column %s", name))
		case c.Type != nil && c.Type.Nullable:
			problems = append(problems, fmt.Sprintf("order_by: %s is Nullable, which a sorting key may not be", name))
		}
	}
	if c := seen[s.Version]; s.Version != "" && (c == nil || c.Type == nil || c.Type.Kind != KindUint || c.Type.Nullable) {
		problems = append(problems, fmt.Sprintf("version: %s must be a UInt column of the schema", s.Version))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// lineageTakes reports whether a lineage column may have type t: its own type, LowCardinality of
// it, or a DateTime with a time zone.
func lineageTakes(l Lineage, t *Type) bool {
	want, _ := ParseType(lineageTypes[l])
	return !t.Nullable && t.Kind == want.Kind && t.Bits == want.Bits && t.Elem == nil
}

// column is the schema's column of that name, or nil.
func (s *Schema) column(name string) *Column {
	for i := range s.Columns {
		if s.Columns[i].Name == name {
			return &s.Columns[i]
		}
	}
	return nil
}

// Names are the columns' names, in insert order.
func (s *Schema) Names() []string {
	out := make([]string, len(s.Columns))
	for i, c := range s.Columns {
		out[i] = c.Name
	}
	return out
}

// CreateSQL is the table's DDL, which works on ClickHouse 18.16 and on current releases:
// ReplacingMergeTree by the version column (plain MergeTree without one), ordered by OrderBy, with
// settings (such as "index_granularity = 8192") where given.
func (s *Schema) CreateSQL(database, table string, settings ...string) string {
	return s.createSQL(database, table, "", s.mergeTree("", ""), true, settings)
}

// LocalSQL is the DDL of a cluster's local table, made on every replica of every shard (ON
// CLUSTER): a replicated MergeTree (Replacing, with a version column) with the explicit ZooKeeper
// path and replica name that 18.16 requires, from the servers' shard and replica macros.
func (s *Schema) LocalSQL(database, table, cluster string, settings ...string) string {
	zk := fmt.Sprintf("/clickhouse/tables/{shard}/%s/%s", database, table)
	return s.createSQL(database, table, cluster, s.mergeTree(zk, "{replica}"), true, settings)
}

// DistributedSQL is the DDL of the Distributed table over a cluster's local tables: made on every
// server of the cluster, read like one table, its rows sharded by cityHash64 of column key.
func (s *Schema) DistributedSQL(database, table, cluster, local, key string) string {
	engine := fmt.Sprintf("Distributed(`%s`, `%s`, `%s`, %s)", cluster, database, local, ShardingKey(key))
	return s.createSQL(database, table, cluster, engine, false, nil)
}

// mergeTree is the engine of a table of the schema; with a ZooKeeper path, its replicated kind.
func (s *Schema) mergeTree(zkPath, replica string) string {
	var args []string
	name := "MergeTree"
	if zkPath != "" {
		name, args = "ReplicatedMergeTree", []string{"'" + zkPath + "'", "'" + replica + "'"}
	}
	if s.Version != "" {
		name = strings.Replace(name, "MergeTree", "ReplacingMergeTree", 1)
		args = append(args, "`"+s.Version+"`")
	}
	if len(args) == 0 {
		return name
	}
	return name + "(" + strings.Join(args, ", ") + ")"
}

func (s *Schema) createSQL(database, table, cluster, engine string, ordered bool, settings []string) string {
	cols := make([]string, len(s.Columns))
	for i, c := range s.Columns {
		cols[i] = "  `" + c.Name + "` " + c.Type.Name
	}
	on := ""
	if cluster != "" {
		on = " ON CLUSTER `" + cluster + "`"
	}
	sql := fmt.Sprintf("CREATE TABLE IF NOT EXISTS `%s`.`%s`%s (\n%s\n) ENGINE = %s", database, table, on, strings.Join(cols, ",\n"), engine)
	if !ordered {
		return sql
	}
	order := make([]string, len(s.OrderBy))
	for i, name := range s.OrderBy {
		order[i] = "`" + name + "`"
	}
	by := strings.Join(order, ", ")
	if len(order) > 1 {
		by = "(" + by + ")"
	}
	sql += "\nORDER BY " + by
	if len(settings) > 0 {
		sql += "\nSETTINGS " + strings.Join(settings, ", ")
	}
	return sql
}

// Mismatches are how an existing table's columns (name → type, as system.columns writes them)
// differ from what the schema inserts: each column missing or of another type.
func (s *Schema) Mismatches(have map[string]string) []string {
	var wrong []string
	for _, c := range s.Columns {
		switch typ, ok := have[c.Name]; {
		case !ok:
			wrong = append(wrong, "no column "+c.Name)
		case !sameType(typ, c.Type.Name):
			wrong = append(wrong, fmt.Sprintf("%s is %s, not %s", c.Name, typ, c.Type.Name))
		}
	}
	return wrong
}

// sameType reports whether a table's type takes the schema's: equal once spaces are ignored, or a
// DateTime with a time zone for DateTime.
func sameType(have, want string) bool {
	strip := func(s string) string { return strings.ReplaceAll(s, " ", "") }
	return strip(have) == strip(want) || want == "DateTime" && strings.HasPrefix(have, "DateTime(")
}
