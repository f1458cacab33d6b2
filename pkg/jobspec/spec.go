package jobspec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluicedata/sluice/pkg/chsink"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// Spec is a job: read every record of Source, in Tasks slices, into the ClickHouse table of Sink.
// Parse returns a Spec with the defaults applied; a Spec built in Go gets no defaults, so set every
// field before calling Validate.
type Spec struct {
	// Name identifies the job to people: lower-case letters, digits, '_' and '-'.
	Name   string `json:"name" yaml:"name"`
	Source Source `json:"source" yaml:"source"`
	// Tasks is how many slices the planner splits the source into; extractors fetch them in parallel.
	Tasks int  `json:"tasks" yaml:"tasks"`
	Sink  Sink `json:"sink" yaml:"sink"`
	// Incremental makes each run read only what changed since the last one that succeeded; the
	// zero value reads everything every time.
	Incremental Incremental `json:"incremental,omitzero" yaml:"incremental,omitempty"`
	// Schedule has the planner run the job again every interval; the zero value runs it once.
	Schedule Schedule `json:"schedule,omitzero" yaml:"schedule,omitempty"`
}

// Incremental is a job whose runs each read from the high-water mark of the last run that
// succeeded: the largest CursorField among its records, kept per job name.
type Incremental struct {
	// CursorField is the dotted path, in each record, to the value that grows as records change
	// (an RFC 3339 time or an integer, as a string or a number); a column for postgres.
	CursorField string `json:"cursor_field" yaml:"cursor_field"`
	// Param is the query parameter an http source takes the mark in; postgres sources filter
	// themselves.
	Param string `json:"param,omitempty" yaml:"param,omitempty"`
	// InitialValue is where the first run starts; empty reads everything.
	InitialValue string `json:"initial_value,omitempty" yaml:"initial_value,omitempty"`
	// Lookback is how far behind the mark a run starts, for records that arrive late: a duration
	// such as 10m for time cursors, an integer for integer ones.
	Lookback string `json:"lookback,omitempty" yaml:"lookback,omitempty"`
}

// Schedule runs a job again every Every (a duration such as 15m); runs of one job never overlap.
type Schedule struct {
	Every string `json:"every" yaml:"every"`
}

// Source is where a job reads: a tagged union on Type. An "http" source is a paginated JSON API
// (URL, RecordsPath, Pagination, Headers, MaxRecords, Slices, Auth); a "postgres" source is a table
// or a query of a PostgreSQL database (DSN, Table or Query, BatchSize). Key, Timeout, MaxRetries,
// RateLimit and Concurrency are for both.
type Source struct {
	// Type is the kind of source: "http" or "postgres".
	Type string `json:"type" yaml:"type"`
	URL  string `json:"url,omitempty" yaml:"url,omitempty"`
	// DSN is a postgres source's connection string: one ${SOURCE_…} or ${file:…} reference, which
	// the planner and the extractors resolve in their own environment.
	DSN string `json:"dsn,omitempty" yaml:"dsn,omitempty"`
	// Table (schema.name or name) or Query (a SELECT) is what a postgres source reads.
	Table string `json:"table,omitempty" yaml:"table,omitempty"`
	Query string `json:"query,omitempty" yaml:"query,omitempty"`
	// BatchSize is the rows a postgres source reads per query.
	BatchSize int `json:"batch_size,omitempty" yaml:"batch_size,omitempty"`
	// RecordsPath is the dotted path to the array of records in a response body; empty when the
	// body is the array.
	RecordsPath string `json:"records_path,omitempty" yaml:"records_path,omitempty"`
	// Key is the dotted path to the field that identifies a record (a string or an integer); for a
	// postgres source, the column that orders and identifies the rows (unique, ideally indexed).
	Key        string     `json:"key" yaml:"key"`
	Pagination Pagination `json:"pagination,omitzero" yaml:"pagination,omitempty"`
	// Headers are sent with every request. Values may refer to the extractor's environment with
	// ${VAR}; they stay unexpanded in the spec and on Kafka, and ExpandHeaders resolves them.
	Headers map[string]string `json:"headers,omitempty" yaml:"headers,omitempty"`
	// Timeout bounds one request. It is written as a Go duration string such as "30s".
	Timeout time.Duration `json:"timeout" yaml:"timeout"`
	// MaxRetries is how many times a failed request is retried; 0 means never.
	MaxRetries int `json:"max_retries" yaml:"max_retries"`
	// MaxRecords is an upper bound on the number of records, for planning a source that reports no
	// total; 0 means none.
	MaxRecords uint64 `json:"max_records,omitempty" yaml:"max_records,omitempty"`
	// RateLimit is requests per second to the source's host from the whole extractor group (each
	// member takes its share); 0 means unlimited.
	RateLimit float64 `json:"rate_limit,omitempty" yaml:"rate_limit,omitempty"`
	// Concurrency caps the tasks of the job one extractor member works on at once; 0 means no cap
	// beyond the member's own.
	Concurrency int `json:"concurrency,omitempty" yaml:"concurrency,omitempty"`
	// Slices split the job into windows of time or of keys that extractors read in parallel, for a
	// source that gives no total; the zero value is none.
	Slices Slices `json:"slices,omitzero" yaml:"slices,omitempty"`
	// Auth is how requests authenticate; the zero value is none (headers may still carry a token).
	Auth Auth `json:"auth,omitzero" yaml:"auth,omitempty"`
}

// Auth is a source's credentials. Every secret (value, password, client_secret) must be a
// reference, ${SOURCE_…} or ${file:/run/secrets/…}, that the extractors resolve themselves: the
// spec, the tasks and the events carry the reference only. The credentials go only to the source's
// host, the client secret only to the token URL's.
type Auth struct {
	// Type is "api_key", "basic" or "oauth2_client_credentials".
	Type string `json:"type" yaml:"type"`
	// In is where an api_key goes: "header" (the default) or "query"; Name is the header or the
	// parameter.
	In    string `json:"in,omitempty" yaml:"in,omitempty"`
	Name  string `json:"name,omitempty" yaml:"name,omitempty"`
	Value string `json:"value,omitempty" yaml:"value,omitempty"`
	// Username and Password are for basic.
	Username string `json:"username,omitempty" yaml:"username,omitempty"`
	Password string `json:"password,omitempty" yaml:"password,omitempty"`
	// TokenURL, ClientID, ClientSecret and Scopes are for oauth2_client_credentials.
	TokenURL     string   `json:"token_url,omitempty" yaml:"token_url,omitempty"`
	ClientID     string   `json:"client_id,omitempty" yaml:"client_id,omitempty"`
	ClientSecret string   `json:"client_secret,omitempty" yaml:"client_secret,omitempty"`
	Scopes       []string `json:"scopes,omitempty" yaml:"scopes,omitempty"`
}

// IsZero reports whether there are no credentials.
func (a Auth) IsZero() bool {
	return a.Type == "" && a.In == "" && a.Name == "" && a.Value == "" &&
		a.Username == "" && a.Password == "" && a.TokenURL == "" && a.ClientID == "" && a.ClientSecret == "" && len(a.Scopes) == 0
}

// Slices are the windows [start, end) in steps of step, each one task whose requests carry
// param_from and param_to; inside a window the pagination applies, to the window's end.
type Slices struct {
	// Type is "time" or "key_range".
	Type      string `json:"type" yaml:"type"`
	ParamFrom string `json:"param_from" yaml:"param_from"`
	ParamTo   string `json:"param_to" yaml:"param_to"`
	// Start and End are RFC 3339 times for time, decimal integers for key_range.
	Start string `json:"start" yaml:"start"`
	End   string `json:"end" yaml:"end"`
	// Step is a duration such as 24h for time, an integer for key_range.
	Step string `json:"step" yaml:"step"`
	// Format is how times are written in the parameters: rfc3339 (the default), date, unix or
	// unix_ms.
	Format string `json:"format,omitempty" yaml:"format,omitempty"`
}

// Pagination says how to page through a source: by record offset (offset_param=N&limit_param=M),
// by page number (page_param=N&limit_param=M), or as a crawl that follows what each page says of
// the next: a cursor in the body (cursor), a URL in the body (next_url), or the Link header
// (link_header).
type Pagination struct {
	// Type is "offset", "page", "cursor", "next_url" or "link_header".
	Type        string `json:"type" yaml:"type"`
	OffsetParam string `json:"offset_param" yaml:"offset_param"`
	PageParam   string `json:"page_param" yaml:"page_param"`
	LimitParam  string `json:"limit_param" yaml:"limit_param"`
	// PageSize is the number of records asked for per request.
	PageSize int `json:"page_size" yaml:"page_size"`
	// FirstPage is the number of the first page, for page pagination: 1 for most APIs, 0 for some.
	FirstPage int `json:"first_page" yaml:"first_page"`
	// TotalPath is the dotted path to the total record count in a response body. Empty when the source
	// has none: then Source.MaxRecords bounds the job, or it ends at the first short or empty page.
	TotalPath string `json:"total_path,omitempty" yaml:"total_path,omitempty"`
	// CursorParam is the query parameter that takes the cursor, for cursor pagination.
	CursorParam string `json:"cursor_param,omitempty" yaml:"cursor_param,omitempty"`
	// CursorPath is the dotted path to the next cursor in a body; null, empty or missing ends the
	// crawl.
	CursorPath string `json:"cursor_path,omitempty" yaml:"cursor_path,omitempty"`
	// NextURLPath is the dotted path to the next page's URL (absolute, or relative to the page's) in
	// a body, for next_url pagination; null, empty or missing ends the crawl.
	NextURLPath string `json:"next_url_path,omitempty" yaml:"next_url_path,omitempty"`
	// HasMorePath is the dotted path to a boolean in a body: false ends a crawl.
	HasMorePath string `json:"has_more_path,omitempty" yaml:"has_more_path,omitempty"`
	// MaxPages is the most pages a crawl reads, an end it asks for: the crawl ends there and the
	// job succeeds. 0 leaves the default bound (source.DefaultMaxPages), which a crawl reaches only
	// by being cut: the page past it is dead-lettered with class max_pages and the job fails.
	MaxPages int `json:"max_pages,omitempty" yaml:"max_pages,omitempty"`
}

// Crawl reports whether the pagination is a crawl: each page says where the next one is, so the
// pages come one after another and the extent is not known in advance.
func (pg Pagination) Crawl() bool {
	return pg.Type == "cursor" || pg.Type == "next_url" || pg.Type == "link_header"
}

// Sink is where the records land: the raw key, payload table by default, or a typed table whose
// columns are declared (Columns) or read from the table (FromTable).
type Sink struct {
	// Table is the ClickHouse table.
	Table string `json:"table" yaml:"table"`
	// Columns are the typed table's columns: each with a name, a ClickHouse type and where its
	// value comes from (a dotted path into the record, the column's name by default, or lineage
	// such as $key or $source).
	Columns []SinkColumn `json:"columns,omitempty" yaml:"columns,omitempty"`
	// FromTable reads the columns of the existing table and fills each from the record field of
	// the same name (columns: from_table in the spec).
	FromTable bool `json:"-" yaml:"-"`
	// Create creates the table when it is missing, ordered by OrderBy: by default the key column
	// and the source column, so that two jobs whose keys overlap keep both sets of rows.
	Create  bool     `json:"create,omitempty" yaml:"create,omitempty"`
	OrderBy []string `json:"order_by,omitempty" yaml:"order_by,omitempty"`
	// OnNewField is what a record field that no column takes does: discard (the default), freeze
	// or evolve.
	OnNewField string `json:"on_new_field,omitempty" yaml:"on_new_field,omitempty"`
	// OnError is the policy of the columns that give none: strict (the default), null or default.
	OnError string `json:"on_error,omitempty" yaml:"on_error,omitempty"`
	// Shared lets the job write a table that other jobs write, when they all say so. A table is
	// its first job's alone otherwise: the planner refuses another job name at submit. The rows of
	// jobs sharing a table stay apart: the raw landing table and a created typed table are sorted
	// by the job's name as well as the key.
	Shared bool `json:"shared,omitempty" yaml:"shared,omitempty"`
	// Cluster names the ClickHouse cluster the table is on (its Distributed table and replicated
	// local tables): a planner whose deployment writes another cluster, or one server
	// (SLUICE_CLICKHOUSE_CLUSTER), refuses the job rather than land it elsewhere.
	Cluster string `json:"cluster,omitempty" yaml:"cluster,omitempty"`
}

// SinkColumn is one column of a typed sink.
type SinkColumn struct {
	Name    string `json:"name" yaml:"name"`
	Type    string `json:"type" yaml:"type"`
	From    string `json:"from,omitempty" yaml:"from,omitempty"`
	OnError string `json:"on_error,omitempty" yaml:"on_error,omitempty"`
}

// Typed reports whether the sink is a typed table rather than the raw landing table.
func (k Sink) Typed() bool { return len(k.Columns) > 0 || k.FromTable }

// Schema is the typed sink's schema as the loader takes it, completed for the job named name (nil
// for the raw landing table).
func (k Sink) Schema(name string) *sluicev1.SinkSchema {
	if !k.Typed() {
		return nil
	}
	p := &sluicev1.SinkSchema{Table: k.Table, FromTable: k.FromTable, Create: k.Create, OrderBy: k.OrderBy,
		OnNewField: k.OnNewField, OnError: k.OnError, Shared: k.Shared}
	for _, c := range k.Columns {
		p.Columns = append(p.Columns, &sluicev1.SinkColumn{Name: c.Name, Type: c.Type, From: c.From, OnError: c.OnError})
	}
	chsink.Complete(p, name)
	return p
}

// Defaults that Parse applies to fields the document leaves out.
const (
	DefaultSourceType  = "http"
	DefaultPagination  = "offset"
	DefaultOffsetParam = "offset"
	DefaultPageParam   = "page"
	DefaultLimitParam  = "limit"
	DefaultPageSize    = 100
	// MaxTasks bounds the tasks a job is split into, and the windows its slices make.
	MaxTasks          = 10000
	DefaultFirstPage  = 1
	DefaultTimeout    = 30 * time.Second
	DefaultMaxRetries = 3
	DefaultTasks      = 1
	DefaultBatchSize  = 10000
)

// JSON returns the canonical JSON of the spec, for storing in events: fields in a fixed order, header
// names sorted, defaults written out, empty optional fields left out. Parse(s.JSON()) gives back an
// equal Spec when s is valid.
func (s *Spec) JSON() []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		// Unreachable: every field is a string, an integer, a string map or a number that
		// sourceDoc writes as a string when it is not finite.
		panic(fmt.Sprintf("jobspec: encode spec: %v", err))
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// sourceDoc is Source as written in a document: the timeout as a duration string. Marshalling uses
// sourceDoc[any] so that a rate limit that is not a finite number (which JSON cannot hold, and
// Validate rejects) is written as a string instead of failing; unmarshalling uses sourceDoc[float64].
type sourceDoc[R any] struct {
	Type        string            `json:"type" yaml:"type"`
	URL         string            `json:"url,omitempty" yaml:"url,omitempty"`
	DSN         string            `json:"dsn,omitempty" yaml:"dsn,omitempty"`
	Table       string            `json:"table,omitempty" yaml:"table,omitempty"`
	Query       string            `json:"query,omitempty" yaml:"query,omitempty"`
	BatchSize   int               `json:"batch_size,omitempty" yaml:"batch_size,omitempty"`
	RecordsPath string            `json:"records_path,omitempty" yaml:"records_path,omitempty"`
	Key         string            `json:"key" yaml:"key"`
	Pagination  Pagination        `json:"pagination,omitzero" yaml:"pagination,omitempty"`
	Headers     map[string]string `json:"headers,omitempty" yaml:"headers,omitempty"`
	Timeout     string            `json:"timeout" yaml:"timeout"`
	MaxRetries  int               `json:"max_retries" yaml:"max_retries"`
	MaxRecords  uint64            `json:"max_records,omitempty" yaml:"max_records,omitempty"`
	RateLimit   R                 `json:"rate_limit,omitempty" yaml:"rate_limit,omitempty"`
	Concurrency int               `json:"concurrency,omitempty" yaml:"concurrency,omitempty"`
	Slices      Slices            `json:"slices,omitzero" yaml:"slices,omitempty"`
	Auth        Auth              `json:"auth,omitzero" yaml:"auth,omitempty"`
}

func (s Source) doc() sourceDoc[any] {
	d := sourceDoc[any]{
		Type:        s.Type,
		URL:         s.URL,
		DSN:         s.DSN,
		Table:       s.Table,
		Query:       s.Query,
		BatchSize:   s.BatchSize,
		RecordsPath: s.RecordsPath,
		Key:         s.Key,
		Pagination:  s.Pagination,
		Headers:     s.Headers,
		Timeout:     s.Timeout.String(),
		MaxRetries:  s.MaxRetries,
		MaxRecords:  s.MaxRecords,
		Concurrency: s.Concurrency,
		Slices:      s.Slices,
		Auth:        s.Auth,
	}
	switch {
	case s.RateLimit == 0:
	case math.IsNaN(s.RateLimit) || math.IsInf(s.RateLimit, 0):
		d.RateLimit = strconv.FormatFloat(s.RateLimit, 'g', -1, 64)
	default:
		d.RateLimit = s.RateLimit
	}
	return d
}

func (s *Source) fromDoc(d sourceDoc[float64]) error {
	var timeout time.Duration
	if d.Timeout != "" {
		var err error
		if timeout, err = time.ParseDuration(d.Timeout); err != nil {
			return errors.New("decode source: timeout must be a duration such as 30s")
		}
	}
	*s = Source{
		Type:        d.Type,
		URL:         d.URL,
		DSN:         d.DSN,
		Table:       d.Table,
		Query:       d.Query,
		BatchSize:   d.BatchSize,
		RecordsPath: d.RecordsPath,
		Key:         d.Key,
		Pagination:  d.Pagination,
		Headers:     d.Headers,
		Timeout:     timeout,
		MaxRetries:  d.MaxRetries,
		MaxRecords:  d.MaxRecords,
		RateLimit:   d.RateLimit,
		Concurrency: d.Concurrency,
		Slices:      d.Slices,
		Auth:        d.Auth,
	}
	return nil
}

// MarshalJSON writes the timeout as a duration string such as "30s".
func (s Source) MarshalJSON() ([]byte, error) {
	return json.Marshal(s.doc())
}

// UnmarshalJSON reads what MarshalJSON writes, with encoding/json's lenient rules: no defaults, no
// validation, unknown fields ignored. Use Parse for a document from a user.
func (s *Source) UnmarshalJSON(data []byte) error {
	var d sourceDoc[float64]
	if err := json.Unmarshal(data, &d); err != nil {
		return err
	}
	return s.fromDoc(d)
}

// MarshalYAML writes the timeout as a duration string such as "30s".
func (s Source) MarshalYAML() (any, error) {
	return s.doc(), nil
}

// UnmarshalYAML reads what MarshalYAML writes, without defaults or validation. Use Parse for a
// document from a user.
func (s *Source) UnmarshalYAML(n *yaml.Node) error {
	var d sourceDoc[float64]
	if err := n.Decode(&d); err != nil {
		return err
	}
	return s.fromDoc(d)
}

// sinkDoc is a Sink as documents write it: columns is from_table or a list, held as C until
// decoded.
type sinkDoc[C any] struct {
	Table      string   `json:"table" yaml:"table"`
	Columns    C        `json:"columns,omitempty" yaml:"columns,omitempty"`
	Create     bool     `json:"create,omitempty" yaml:"create,omitempty"`
	OrderBy    []string `json:"order_by,omitempty" yaml:"order_by,omitempty"`
	OnNewField string   `json:"on_new_field,omitempty" yaml:"on_new_field,omitempty"`
	OnError    string   `json:"on_error,omitempty" yaml:"on_error,omitempty"`
	Shared     bool     `json:"shared,omitempty" yaml:"shared,omitempty"`
	Cluster    string   `json:"cluster,omitempty" yaml:"cluster,omitempty"`
}

func (k Sink) doc() sinkDoc[any] {
	d := sinkDoc[any]{Table: k.Table, Create: k.Create, OrderBy: k.OrderBy, OnNewField: k.OnNewField, OnError: k.OnError, Shared: k.Shared,
		Cluster: k.Cluster}
	switch {
	case k.FromTable:
		d.Columns = "from_table"
	case len(k.Columns) > 0:
		d.Columns = k.Columns
	}
	return d
}

// sinkFrom is the Sink of d: from_table, or the columns that list decodes (none when it is nil).
func sinkFrom[C any](d sinkDoc[C], fromTable bool, list func(dst *[]SinkColumn) error) (Sink, error) {
	k := Sink{Table: d.Table, FromTable: fromTable, Create: d.Create, OrderBy: d.OrderBy, OnNewField: d.OnNewField, OnError: d.OnError,
		Shared: d.Shared, Cluster: d.Cluster}
	if fromTable || list == nil {
		return k, nil
	}
	return k, list(&k.Columns)
}

// MarshalJSON writes columns as from_table or a list.
func (k Sink) MarshalJSON() ([]byte, error) { return json.Marshal(k.doc()) }

// UnmarshalJSON reads what MarshalJSON writes, without defaults or validation.
func (k *Sink) UnmarshalJSON(data []byte) error {
	var d sinkDoc[json.RawMessage]
	if err := json.Unmarshal(data, &d); err != nil {
		return err
	}
	var list func(*[]SinkColumn) error
	if len(d.Columns) > 0 && string(d.Columns) != "null" {
		list = func(dst *[]SinkColumn) error { return json.Unmarshal(d.Columns, dst) }
	}
	var err error
	*k, err = sinkFrom(d, len(d.Columns) > 0 && d.Columns[0] == '"', list)
	return err
}

// MarshalYAML writes columns as from_table or a list.
func (k Sink) MarshalYAML() (any, error) { return k.doc(), nil }

// UnmarshalYAML reads what MarshalYAML writes, without defaults or validation.
func (k *Sink) UnmarshalYAML(n *yaml.Node) error {
	var d sinkDoc[yaml.Node]
	if err := n.Decode(&d); err != nil {
		return err
	}
	var list func(*[]SinkColumn) error
	if d.Columns.Kind == yaml.SequenceNode {
		list = func(dst *[]SinkColumn) error { return d.Columns.Decode(dst) }
	}
	var err error
	*k, err = sinkFrom(d, d.Columns.Kind == yaml.ScalarNode && d.Columns.Value == "from_table", list)
	return err
}
