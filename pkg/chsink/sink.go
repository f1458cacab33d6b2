package chsink

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// Policy is what a column does with a value that does not fit it, or with a missing or null one
// when the column is not Nullable.
type Policy string

// The policies a column may have.
const (
	// Strict dead-letters the record, naming the column and the reason. The default.
	Strict Policy = "strict"
	// Null lands NULL; the column must be Nullable.
	Null Policy = "null"
	// Default lands the type's default: 0, "", false, 1970-01-01, the first value of an Enum, an
	// empty array, NULL for a Nullable column.
	Default Policy = "default"
)

// FieldPolicy is what a record field that no column takes does.
type FieldPolicy string

// The field policies a sink may have.
const (
	// Discard drops the field and counts it. The default.
	Discard FieldPolicy = "discard"
	// Freeze dead-letters the record, naming the field.
	Freeze FieldPolicy = "freeze"
	// Evolve adds a column for the field (ALTER TABLE … ADD COLUMN, of the type its values
	// suggest, Nullable) and fills it.
	Evolve FieldPolicy = "evolve"
)

// Names of the lineage columns that a created typed table gets unless the sink has them, and that
// a from_table sink fills from lineage.
const (
	SourceColumn  = "_source"
	VersionColumn = "_version"
	KeyColumn     = "_key"
)

// lineageByName is the lineage of a from_table column by its name.
var lineageByName = map[string]Lineage{
	KeyColumn: FromKey, SourceColumn: FromSource, VersionColumn: FromVersion, "_job_id": FromJob,
	"_task_id": FromTask, "_partition": FromPartition, "_offset": FromOffset, "_extracted_at": FromExtractedAt,
}

// Sink is a job's typed landing, as its spec says: the table, its declared columns or that they are
// read from the table, and the policies. Writer.Schema resolves it into the Schema of an insert.
type Sink struct {
	ID         string
	Table      string
	Columns    []Column
	FromTable  bool
	Create     bool
	OrderBy    []string
	OnNewField FieldPolicy
	OnError    Policy
	Source     string
	// Shared is set when the job shares the table with other jobs (the planner checks it at submit).
	Shared bool
}

// Problem is one thing wrong with a sink, at a path relative to the sink ("columns[2].type").
type Problem struct {
	Path, Message string
}

func (p Problem) String() string { return p.Path + ": " + p.Message }

// SchemaID is the id of a sink schema: a hash of its content, so that the same schema always has
// the same id and a published one never changes.
func SchemaID(p *sluicev1.SinkSchema) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(p)
	if err != nil {
		panic(err) // a SinkSchema holds strings and bools only
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// Complete fills in what a sink spec leaves to sluice: when the table is created, a key column
// when no column comes from the key, the source and version columns, and an order by the key column
// and the source column, so that two jobs whose records share keys keep both sets of rows.
func Complete(p *sluicev1.SinkSchema, source string) {
	p.Source = source
	if p.OnNewField == "" {
		p.OnNewField = string(Discard)
	}
	if p.OnError == "" {
		p.OnError = string(Strict)
	}
	if !p.Create || p.FromTable {
		return
	}
	has := func(from string) string {
		for _, c := range p.Columns {
			if c.From == from {
				return c.Name
			}
		}
		return ""
	}
	add := func(name, from string) string {
		if n := has(from); n != "" {
			return n
		}
		p.Columns = append(p.Columns, &sluicev1.SinkColumn{Name: name, From: from})
		return name
	}
	key := add(KeyColumn, "$"+string(FromKey))
	src := add(SourceColumn, "$"+string(FromSource))
	add(VersionColumn, "$"+string(FromVersion))
	if len(p.OrderBy) == 0 {
		p.OrderBy = []string{key, src}
	}
}

// NewSink checks a sink schema and returns it as a Sink, with every problem found.
func NewSink(p *sluicev1.SinkSchema) (*Sink, []Problem) {
	var probs []Problem
	add := func(path, format string, args ...any) {
		probs = append(probs, Problem{path, fmt.Sprintf(format, args...)})
	}
	s := &Sink{ID: SchemaID(p), Table: p.Table, FromTable: p.FromTable, Create: p.Create, OrderBy: p.OrderBy,
		OnNewField: FieldPolicy(p.OnNewField), OnError: Policy(p.OnError), Source: p.Source, Shared: p.Shared}
	if !ValidTable(p.Table) {
		add("table", "must be letters, digits and '_', not starting with a digit, at most 206 characters")
	}
	switch s.OnNewField {
	case Discard, Freeze, Evolve:
	default:
		add("on_new_field", "must be discard, freeze or evolve, got %q", p.OnNewField)
	}
	switch s.OnError {
	case Strict, Default:
	case Null:
		if p.FromTable {
			break // each Nullable column takes NULL; the others are strict
		}
	default:
		add("on_error", "must be strict, null or default, got %q", p.OnError)
	}
	switch {
	case p.FromTable && len(p.Columns) > 0:
		add("columns", "is from_table or a list, not both")
	case p.FromTable && p.Create:
		add("create", "a from_table sink reads an existing table; it creates none")
	case p.FromTable && len(p.OrderBy) > 0:
		add("order_by", "a from_table sink reads an existing table; its order is the table's")
	case !p.FromTable && len(p.Columns) == 0:
		add("columns", "a typed sink needs columns, or from_table")
	case !p.Create && len(p.OrderBy) > 0:
		add("order_by", "is the order of a created table: set create: true, or leave it out")
	}
	for i, pc := range p.Columns {
		at := fmt.Sprintf("columns[%d]", i)
		c := Column{Name: pc.Name, OnError: Policy(pc.OnError)}
		if c.OnError == "" {
			c.OnError = s.OnError
		}
		if lin, ok := strings.CutPrefix(pc.From, "$"); ok {
			c.Lineage = Lineage(lin)
			if _, known := lineageTypes[c.Lineage]; !known || c.Lineage == FromLoadedAt {
				add(at+".from", "no lineage %q: one of $key, $record, $source, $job, $task, $partition, $offset, $extracted_at, $version", pc.From)
			}
		} else {
			c.Path = pc.From
			if c.Path == "" {
				c.Path = pc.Name
			}
		}
		switch {
		case pc.Type == "" && c.Lineage == "":
			add(at+".type", "required")
		case pc.Type != "":
			t, err := ParseType(pc.Type)
			if err != nil {
				add(at+".type", "%v", err)
			}
			c.Type = t
		}
		switch c.OnError {
		case Strict, Default:
		case Null:
			if c.Type != nil && !c.Type.Nullable {
				add(at+".on_error", "null needs a Nullable type, and %s is not", c.Type.Name)
			}
		default:
			add(at+".on_error", "must be strict, null or default, got %q", pc.OnError)
		}
		s.Columns = append(s.Columns, c)
	}
	if !p.FromTable && len(p.Columns) > 0 && len(probs) == 0 {
		order := p.OrderBy
		if !p.Create {
			order = []string{s.Columns[0].Name} // checked against the table, not created
		}
		schema := Schema{Columns: slices.Clone(s.Columns), OrderBy: order}
		if err := schema.init(); err != nil {
			for _, msg := range strings.Split(err.Error(), "; ") {
				add("columns", "%s", msg)
			}
		} else {
			s.Columns = schema.Columns // with the lineage columns' types filled in
		}
	}
	return s, probs
}

// schema is the sink's schema for a table whose insertable columns are order, with the types in
// have (as system.columns writes them): the declared columns, or for a from_table sink every column
// of the table. A created table is ordered and collapsed as the sink says.
func (s *Sink) schema(have map[string]string, order []string) (*Schema, error) {
	out := Schema{Columns: slices.Clone(s.Columns), OrderBy: s.OrderBy, Source: s.Source, OnNewField: s.OnNewField}
	if s.FromTable {
		out.Columns = nil
		for _, name := range order {
			typ := have[name]
			t, err := ParseType(typ)
			if err != nil {
				return nil, fmt.Errorf("column %s: %w", name, err)
			}
			c := Column{Name: name, Type: t, Path: name, OnError: s.OnError}
			if lin, ok := lineageByName[name]; ok {
				c.Path, c.Lineage = "", lin
			}
			c.OnError = policyFor(c.OnError, t)
			out.Columns = append(out.Columns, c)
		}
	}
	for _, c := range out.Columns {
		if c.Lineage == FromVersion && s.Create {
			out.Version = c.Name
		}
	}
	if len(out.OrderBy) == 0 && len(out.Columns) > 0 {
		out.OrderBy = []string{out.Columns[0].Name}
	}
	if err := out.init(); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateSchema is the schema of the table that the sink creates.
func (s *Sink) CreateSchema() (*Schema, error) { return s.schema(nil, nil) }
