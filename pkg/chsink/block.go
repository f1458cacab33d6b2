package chsink

import (
	"fmt"
	"reflect"
	"strings"
	"time"
	"unsafe"
)

// Input is one record as the loader has it: the values lineage columns take, and the record's JSON.
// Source is the job's name, which $source lineage takes where the schema names none (the raw
// landing rows, whose blocks hold the records of every job that writes the table); Planned is when
// the job (this run of it) was planned, which the row's version starts with (RowVersion).
type Input struct {
	Key         string
	Record      []byte
	Job, Task   string
	Source      string
	Partition   int32
	Offset      int64
	ExtractedAt time.Time
	Planned     time.Time
}

// FieldError is a record that its table's schema refuses: a value that does not fit its column
// under the strict policy, or, under freeze, a field that no column takes.
type FieldError struct {
	// Column is the column that refused the value, or Field the field that no column takes.
	Column, Field string
	Reason        string
}

func (e *FieldError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("field %q: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("column %s: %s", e.Column, e.Reason)
}

// Block is the rows of one insert into one table, column by column, built as the schema says. It
// keeps the records' bytes without copying them: the caller must not change them later.
type Block struct {
	schema *Schema
	cols   []builder
	// fields are the columns filled from record fields, by the first step of their path.
	fields map[string][]int
	paths  [][]string
	keeps  bool // a column takes the record whole: no field is left over
	raws   [][]byte
	values []any
	staged map[string][]byte // the new fields of the record being added, under Evolve
	n      int
	// Discarded counts the record fields that no column took, in the rows added.
	Discarded int
	// New are the fields that no column took, with what their values suggest, when the schema
	// evolves (Evolve); the rows were added without them.
	New map[string]*Inference
}

// NewBlock returns an empty block of the schema, with room for n rows.
func (s *Schema) NewBlock(n int) *Block {
	b := &Block{schema: s, fields: map[string][]int{}, paths: make([][]string, len(s.Columns))}
	for i, c := range s.Columns {
		b.cols = append(b.cols, newBuilder(c, s.Source, n))
		if c.Lineage == FromRecord {
			b.keeps = true
		}
		if c.Path != "" {
			b.paths[i] = strings.Split(c.Path, ".")
			b.fields[b.paths[i][0]] = append(b.fields[b.paths[i][0]], i)
		}
	}
	b.raws = make([][]byte, len(s.Columns))
	b.values = make([]any, len(s.Columns))
	return b
}

// Len is the number of rows.
func (b *Block) Len() int { return b.n }

// Add converts one record into a row. A value its column refuses under the strict policy, or a
// field no column takes under freeze, is a *FieldError, and the row is not added.
func (b *Block) Add(in *Input) error {
	discarded := 0
	if len(b.fields) > 0 || !b.keeps {
		var err error
		if discarded, err = b.read(in.Record); err != nil {
			return err
		}
	}
	for i, c := range b.schema.Columns {
		if c.Path == "" {
			continue
		}
		v, err := Convert(c.Type, b.raws[i])
		if err != nil {
			switch c.OnError {
			case Null:
				v = reflect.Zero(c.Type.GoType()).Interface()
			case Default:
				v = zeroValue(c.Type)
			default:
				return &FieldError{Column: c.Name, Reason: err.Error()}
			}
		}
		b.values[i] = v
	}
	for i, col := range b.cols {
		col.add(in, b.values[i])
	}
	b.n++
	b.Discarded += discarded
	for name, raw := range b.staged { // only the fields of records that were added
		if b.New == nil {
			b.New = map[string]*Inference{}
		}
		in := b.New[name]
		if in == nil {
			in = &Inference{}
			b.New[name] = in
		}
		in.Add(raw)
	}
	return nil
}

// read finds the raw values of the field columns in rec, and counts the fields no column takes.
func (b *Block) read(rec []byte) (int, error) {
	clear(b.raws)
	clear(b.staged)
	discarded := 0
	var refused *FieldError
	err := eachField(rec, func(name, raw []byte) bool {
		cols, ok := b.fields[string(name)]
		if !ok {
			if b.keeps {
				return true
			}
			switch b.schema.OnNewField {
			case Freeze:
				refused = &FieldError{Field: string(name), Reason: "no column takes it, and the sink does not change (on_new_field: freeze)"}
				return false
			case Evolve:
				if b.staged == nil {
					b.staged = map[string][]byte{}
				}
				b.staged[string(name)] = raw
			}
			discarded++
			return true
		}
		for _, i := range cols {
			if len(b.paths[i]) == 1 {
				b.raws[i] = raw
				continue
			}
			if v, err := lookup(raw, b.paths[i][1:]); err == nil && v != nil {
				b.raws[i] = v
			}
		}
		return true
	})
	switch {
	case err != nil:
		return 0, &FieldError{Field: "*", Reason: err.Error()}
	case refused != nil:
		return 0, refused
	}
	return discarded, nil
}

// Slice returns rows [i, j) as a block of their own, sharing the columns' memory.
func (b *Block) Slice(i, j int) *Block {
	out := &Block{schema: b.schema, n: j - i}
	for _, c := range b.cols {
		out.cols = append(out.cols, c.slice(i, j))
	}
	return out
}

// Pick returns the rows at the indexes rows, in that order, as a block of their own.
func (b *Block) Pick(rows []int) *Block {
	out := &Block{schema: b.schema, n: len(rows)}
	for _, c := range b.cols {
		out.cols = append(out.cols, c.pick(rows))
	}
	return out
}

// columns are the block's columns as clickhouse-go appends them, with loadedAt for load time.
func (b *Block) columns(loadedAt time.Time) []any {
	out := make([]any, len(b.cols))
	for i, c := range b.cols {
		out[i] = c.column(b.n, loadedAt)
	}
	return out
}

// builder collects one column's values.
type builder interface {
	add(in *Input, v any)
	slice(i, j int) builder
	pick(rows []int) builder
	column(n int, loadedAt time.Time) any
}

// picked returns vals at the indexes rows.
func picked[T any](vals []T, rows []int) []T {
	out := make([]T, len(rows))
	for i, r := range rows {
		out[i] = vals[r]
	}
	return out
}

func newBuilder(c Column, source string, n int) builder {
	switch c.Lineage {
	case FromKey:
		return lineage(n, func(in *Input) string { return in.Key })
	case FromRecord:
		return lineage(n, func(in *Input) string { return unsafe.String(unsafe.SliceData(in.Record), len(in.Record)) })
	case FromJob:
		return lineage(n, func(in *Input) string { return in.Job })
	case FromTask:
		return lineage(n, func(in *Input) string { return in.Task })
	case FromSource:
		if source == "" {
			return lineage(n, func(in *Input) string { return in.Source })
		}
		return lineage(n, func(*Input) string { return source })
	case FromPartition:
		return lineage(n, func(in *Input) int32 { return in.Partition })
	case FromOffset:
		return lineage(n, func(in *Input) int64 { return in.Offset })
	case FromExtractedAt:
		return lineage(n, func(in *Input) time.Time { return in.ExtractedAt.UTC().Truncate(time.Second) })
	case FromVersion:
		return lineage(n, func(in *Input) uint64 { return RowVersion(in.Planned, in.Offset) })
	case FromLoadedAt:
		return loadedAt{}
	}
	g := c.Type.GoType()
	if typed := typedFields[g]; typed != nil {
		return typed(n)
	}
	return &field{vals: reflect.MakeSlice(reflect.SliceOf(g), 0, n)}
}

// typedFields make field columns of the commoner Go types, which append without reflection.
var typedFields = map[reflect.Type]func(n int) builder{
	reflect.TypeFor[string]():     newTyped[string],
	reflect.TypeFor[int64]():      newTyped[int64],
	reflect.TypeFor[int32]():      newTyped[int32],
	reflect.TypeFor[uint64]():     newTyped[uint64],
	reflect.TypeFor[uint32]():     newTyped[uint32],
	reflect.TypeFor[uint8]():      newTyped[uint8],
	reflect.TypeFor[float64]():    newTyped[float64],
	reflect.TypeFor[bool]():       newTyped[bool],
	reflect.TypeFor[time.Time]():  newTyped[time.Time],
	reflect.TypeFor[*string]():    newTyped[*string],
	reflect.TypeFor[*int64]():     newTyped[*int64],
	reflect.TypeFor[*float64]():   newTyped[*float64],
	reflect.TypeFor[*time.Time](): newTyped[*time.Time],
}

func newTyped[T any](n int) builder { return &typed[T]{make([]T, 0, n)} }

// typed is a field column of Go type T.
type typed[T any] struct{ vals []T }

func (c *typed[T]) add(_ *Input, v any)       { c.vals = append(c.vals, v.(T)) }
func (c *typed[T]) slice(i, j int) builder    { return &typed[T]{c.vals[i:j:j]} }
func (c *typed[T]) pick(rows []int) builder   { return &typed[T]{picked(c.vals, rows)} }
func (c *typed[T]) column(int, time.Time) any { return c.vals }

// lineageCol is a column of one lineage: typed, so that appending costs no conversion.
type lineageCol[T any] struct {
	vals []T
	get  func(*Input) T
}

func lineage[T any](n int, get func(*Input) T) *lineageCol[T] {
	return &lineageCol[T]{vals: make([]T, 0, n), get: get}
}

func (c *lineageCol[T]) add(in *Input, _ any) { c.vals = append(c.vals, c.get(in)) }
func (c *lineageCol[T]) slice(i, j int) builder {
	return &lineageCol[T]{vals: c.vals[i:j:j], get: c.get}
}
func (c *lineageCol[T]) pick(rows []int) builder {
	return &lineageCol[T]{vals: picked(c.vals, rows), get: c.get}
}
func (c *lineageCol[T]) column(int, time.Time) any { return c.vals }

// loadedAt is the load time, the same for every row of an insert.
type loadedAt struct{}

func (loadedAt) add(*Input, any)        {}
func (loadedAt) slice(int, int) builder { return loadedAt{} }
func (loadedAt) pick([]int) builder     { return loadedAt{} }
func (loadedAt) column(n int, at time.Time) any {
	out := make([]time.Time, n)
	at = at.UTC().Truncate(time.Second)
	for i := range out {
		out[i] = at
	}
	return out
}

// field is a column filled from a record field, of the Go type its ClickHouse type takes.
type field struct{ vals reflect.Value }

func (c *field) add(_ *Input, v any)    { c.vals = reflect.Append(c.vals, reflect.ValueOf(v)) }
func (c *field) slice(i, j int) builder { return &field{vals: c.vals.Slice3(i, j, j)} }
func (c *field) pick(rows []int) builder {
	out := reflect.MakeSlice(c.vals.Type(), len(rows), len(rows))
	for i, r := range rows {
		out.Index(i).Set(c.vals.Index(r))
	}
	return &field{vals: out}
}
func (c *field) column(int, time.Time) any {
	return c.vals.Interface()
}

// zeroValue is the default of a type, as the default policy lands it.
func zeroValue(t *Type) any {
	if t.Nullable {
		return reflect.Zero(t.GoType()).Interface()
	}
	switch t.Kind {
	case KindEnum:
		return t.Enum[0]
	case KindDate, KindDateTime, KindDateTime64:
		return time.Unix(0, 0).UTC()
	case KindArray:
		return reflect.MakeSlice(t.GoType(), 0, 0).Interface()
	}
	return reflect.Zero(t.GoType()).Interface()
}

// Column is the values of the named column as clickhouse-go takes them ([]string for a String
// column, []*int64 for Nullable(Int64), …); nil when the block has no such column. A loaded_at
// column holds the zero time.
func (b *Block) Column(name string) any {
	for i, c := range b.schema.Columns {
		if c.Name == name {
			return b.cols[i].column(b.n, time.Time{})
		}
	}
	return nil
}
