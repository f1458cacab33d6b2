package jobspec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Parse decodes a job spec from YAML or JSON (JSON is YAML), applies the defaults and validates it.
// Decoding is strict: an unknown field, a duplicate field or a value of the wrong type is a problem
// with its path, such as "source.pagination.pgae_size: unknown field" or "tasks: must be an integer".
// A field that is absent or null gets its default; an explicit value, even 0 or "", is kept and
// validated. On failure the error is a *Error holding every problem found (past 100, the first 100
// by path and a count of the rest).
//
// Anchors and aliases are followed; merge keys ("<<") are not supported and show as unknown fields.
func Parse(data []byte) (*Spec, error) {
	root, err := parseDocument(data)
	if err != nil {
		return nil, err
	}
	d := decoder{present: make(map[string]bool)}
	var s Spec
	d.mapping(root, "", d.specFields(&s))
	d.applyDefaults(&s)

	var v problems
	s.validate(&v)
	for _, p := range v.list {
		if !d.isBlocked(p.Path) {
			d.add(p.Path, p.Message)
		}
	}
	d.dropped += v.dropped
	if err := d.err(); err != nil {
		return nil, err
	}
	return &s, nil
}

// parseDocument returns the root mapping of the single YAML document in data. An empty document is an
// empty mapping, so that validation reports the required fields.
func parseDocument(data []byte) (*yaml.Node, error) {
	empty := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return empty, nil
	} else if err != nil {
		return nil, documentProblem("invalid YAML or JSON: " + strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return nil, documentProblem("must be a single document")
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return empty, nil
	}
	if size, depth := decodedSize(doc.Content[0]); size > MaxDecodedBytes {
		return nil, documentProblem(fmt.Sprintf("is larger than %d bytes once its aliases are expanded: a spec may not be", MaxDecodedBytes))
	} else if depth > maxDepth {
		return nil, documentProblem(fmt.Sprintf("nests deeper than %d levels", maxDepth))
	}
	root := resolve(doc.Content[0])
	if isNull(root) {
		return empty, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, documentProblem("must be a mapping with the fields name, source, tasks and sink")
	}
	return root, nil
}

// MaxDecodedBytes bounds a spec as it is decoded, every alias replaced by what it names: a few
// aliases of aliases make a small document a large one, and the work of decoding and validating it
// grows with what it decodes to, not with its bytes.
const MaxDecodedBytes = 1 << 20

// maxDepth bounds how deep a spec nests; its own shape is a few levels deep.
const maxDepth = 32

// nodeBytes is what decodedSize counts for each node besides its value: a node costs memory too.
const nodeBytes = 16

// decodedSize is the size of the document n once its aliases are expanded (its scalars' bytes and
// nodeBytes a node), counted only up to just past MaxDecodedBytes, and how deep it nests. Each node
// is measured once, so the count costs what the document's own nodes do.
func decodedSize(n *yaml.Node) (size int64, depth int) {
	type measure struct {
		size  int64
		depth int
	}
	seen := map[*yaml.Node]measure{}
	var walk func(n *yaml.Node, level int) measure
	walk = func(n *yaml.Node, level int) measure {
		if m, ok := seen[n]; ok {
			return m
		}
		if level > maxDepth {
			return measure{depth: level}
		}
		seen[n] = measure{size: MaxDecodedBytes + 1} // an alias of itself is as large as can be
		m := measure{size: nodeBytes + int64(len(n.Value)), depth: 1}
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			inner := walk(n.Alias, level)
			m = measure{size: nodeBytes + inner.size, depth: inner.depth}
		}
		for _, c := range n.Content {
			inner := walk(c, level+1)
			m.size = min(m.size+inner.size, MaxDecodedBytes+1)
			m.depth = max(m.depth, inner.depth+1)
			if m.size > MaxDecodedBytes || m.depth > maxDepth {
				break
			}
		}
		seen[n] = m
		return m
	}
	m := walk(n, 0)
	return m.size, m.depth
}

func documentProblem(message string) error {
	return &Error{Problems: []Problem{{Message: message}}}
}

// fieldFunc decodes the value n of the field at path. It is only called for a value that is present
// and not null.
type fieldFunc func(n *yaml.Node, path string)

// decoder turns a yaml.Node tree into a Spec, recording a problem for every field it cannot decode.
type decoder struct {
	problems
	// present holds the paths of fields the document sets to something other than null; defaults
	// apply to the others.
	present map[string]bool
	// blocked holds the paths of values of the wrong type. Validation problems at or under them are
	// dropped: "source: must be a mapping" says enough without "source.url: required".
	blocked []string
}

// takesNull are the fields for which null is a value, not an absence: a column policy of null.
var takesNull = map[string]bool{"on_error": true}

func (d *decoder) specFields(s *Spec) map[string]fieldFunc {
	src := &s.Source
	pg := &s.Source.Pagination
	return map[string]fieldFunc{
		"name": d.str(&s.Name),
		"source": d.object(map[string]fieldFunc{
			"type":         d.str(&src.Type),
			"url":          d.str(&src.URL),
			"dsn":          d.str(&src.DSN),
			"table":        d.str(&src.Table),
			"query":        d.str(&src.Query),
			"batch_size":   d.integer(&src.BatchSize),
			"records_path": d.str(&src.RecordsPath),
			"key":          d.str(&src.Key),
			"pagination": d.object(map[string]fieldFunc{
				"type":          d.str(&pg.Type),
				"offset_param":  d.str(&pg.OffsetParam),
				"page_param":    d.str(&pg.PageParam),
				"limit_param":   d.str(&pg.LimitParam),
				"page_size":     d.integer(&pg.PageSize),
				"first_page":    d.integer(&pg.FirstPage),
				"total_path":    d.str(&pg.TotalPath),
				"cursor_param":  d.str(&pg.CursorParam),
				"cursor_path":   d.str(&pg.CursorPath),
				"next_url_path": d.str(&pg.NextURLPath),
				"has_more_path": d.str(&pg.HasMorePath),
				"max_pages":     d.integer(&pg.MaxPages),
			}),
			"headers":     d.headers(&src.Headers),
			"timeout":     d.duration(&src.Timeout),
			"max_retries": d.integer(&src.MaxRetries),
			"max_records": d.count(&src.MaxRecords),
			"rate_limit":  d.number(&src.RateLimit),
			"concurrency": d.integer(&src.Concurrency),
			"slices": d.object(map[string]fieldFunc{
				"type":       d.str(&src.Slices.Type),
				"param_from": d.str(&src.Slices.ParamFrom),
				"param_to":   d.str(&src.Slices.ParamTo),
				"start":      d.text(&src.Slices.Start),
				"end":        d.text(&src.Slices.End),
				"step":       d.text(&src.Slices.Step),
				"format":     d.str(&src.Slices.Format),
			}),
			"auth": d.object(map[string]fieldFunc{
				"type":          d.str(&src.Auth.Type),
				"in":            d.str(&src.Auth.In),
				"name":          d.str(&src.Auth.Name),
				"value":         d.str(&src.Auth.Value),
				"username":      d.str(&src.Auth.Username),
				"password":      d.str(&src.Auth.Password),
				"token_url":     d.str(&src.Auth.TokenURL),
				"client_id":     d.str(&src.Auth.ClientID),
				"client_secret": d.str(&src.Auth.ClientSecret),
				"scopes":        d.strings(&src.Auth.Scopes),
			}),
		}),
		"tasks": d.integer(&s.Tasks),
		"sink": d.object(map[string]fieldFunc{
			"table":        d.str(&s.Sink.Table),
			"columns":      d.columns(&s.Sink),
			"create":       d.boolean(&s.Sink.Create),
			"order_by":     d.strings(&s.Sink.OrderBy),
			"on_new_field": d.str(&s.Sink.OnNewField),
			"on_error":     d.policy(&s.Sink.OnError),
			"shared":       d.boolean(&s.Sink.Shared),
			"cluster":      d.str(&s.Sink.Cluster),
		}),
		"incremental": d.object(map[string]fieldFunc{
			"cursor_field":  d.str(&s.Incremental.CursorField),
			"param":         d.str(&s.Incremental.Param),
			"initial_value": d.text(&s.Incremental.InitialValue),
			"lookback":      d.text(&s.Incremental.Lookback),
		}),
		"schedule": d.object(map[string]fieldFunc{
			"every": d.str(&s.Schedule.Every),
		}),
	}
}

func (d *decoder) applyDefaults(s *Spec) {
	defaults := []struct {
		path  string
		apply func()
	}{
		{"source.type", func() { s.Source.Type = DefaultSourceType }},
		{"source.pagination.type", func() { s.Source.Pagination.Type = DefaultPagination }},
		{"source.pagination.offset_param", func() { s.Source.Pagination.OffsetParam = DefaultOffsetParam }},
		{"source.pagination.page_param", func() { s.Source.Pagination.PageParam = DefaultPageParam }},
		{"source.pagination.limit_param", func() { s.Source.Pagination.LimitParam = DefaultLimitParam }},
		{"source.pagination.page_size", func() { s.Source.Pagination.PageSize = DefaultPageSize }},
		{"source.pagination.first_page", func() { s.Source.Pagination.FirstPage = DefaultFirstPage }},
		{"source.timeout", func() { s.Source.Timeout = DefaultTimeout }},
		{"source.max_retries", func() { s.Source.MaxRetries = DefaultMaxRetries }},
		{"tasks", func() { s.Tasks = DefaultTasks }},
	}
	for _, f := range defaults {
		http := strings.HasPrefix(f.path, "source.pagination.")
		if !d.present[f.path] && (!http || s.Source.Type != "postgres") {
			f.apply()
		}
	}
	if s.Source.Type == "postgres" && !d.present["source.batch_size"] {
		s.Source.BatchSize = DefaultBatchSize
	}
	if s.Source.Auth.Type == "api_key" && !d.present["source.auth.in"] {
		s.Source.Auth.In = "header"
	}
}

// mapping decodes the fields of the mapping n at path.
func (d *decoder) mapping(n *yaml.Node, path string, fields map[string]fieldFunc) {
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, value := resolve(n.Content[i]), resolve(n.Content[i+1])
		if key.Kind != yaml.ScalarNode {
			d.add(path, "field names must be strings")
			continue
		}
		p := join(path, key.Value)
		switch f, known := fields[key.Value]; {
		case seen[key.Value]:
			d.add(p, "duplicate field")
		case !known:
			d.add(p, "unknown field")
		case !isNull(value) || takesNull[key.Value]:
			d.present[p] = true
			f(value, p)
		}
		seen[key.Value] = true
	}
}

// wrongType records that the value at path is not of the type the field needs.
func (d *decoder) wrongType(path, message string) {
	d.add(path, message)
	d.blocked = append(d.blocked, path)
}

func (d *decoder) isBlocked(path string) bool {
	for _, b := range d.blocked {
		if path == b || strings.HasPrefix(path, b+".") {
			return true
		}
	}
	return false
}

func (d *decoder) object(fields map[string]fieldFunc) fieldFunc {
	return func(n *yaml.Node, path string) {
		if n.Kind != yaml.MappingNode {
			d.wrongType(path, "must be a mapping")
			return
		}
		d.mapping(n, path, fields)
	}
}

func (d *decoder) str(dst *string) fieldFunc {
	return func(n *yaml.Node, path string) {
		if !isScalar(n, "!!str") {
			d.wrongType(path, "must be a string")
			return
		}
		*dst = n.Value
	}
}

// text takes a string, an integer or a timestamp as written: a bound that may be either.
func (d *decoder) text(dst *string) fieldFunc {
	return func(n *yaml.Node, path string) {
		if !isScalar(n, "!!str") && !isScalar(n, "!!int") && !isScalar(n, "!!timestamp") {
			d.wrongType(path, "must be a string, an integer or a time")
			return
		}
		*dst = n.Value
	}
}

func (d *decoder) integer(dst *int) fieldFunc {
	return func(n *yaml.Node, path string) {
		if !isScalar(n, "!!int") {
			d.wrongType(path, "must be an integer")
			return
		}
		if err := n.Decode(dst); err != nil {
			d.wrongType(path, "is out of range")
		}
	}
}

func (d *decoder) count(dst *uint64) fieldFunc {
	return func(n *yaml.Node, path string) {
		var signed int64
		switch {
		case !isScalar(n, "!!int"):
			d.wrongType(path, "must be an integer")
		case n.Decode(&signed) == nil && signed < 0:
			d.wrongType(path, "must be 0 or more")
		case n.Decode(dst) != nil:
			d.wrongType(path, "is out of range")
		}
	}
}

func (d *decoder) number(dst *float64) fieldFunc {
	return func(n *yaml.Node, path string) {
		if !isScalar(n, "!!int") && !isScalar(n, "!!float") {
			d.wrongType(path, "must be a number")
			return
		}
		if err := n.Decode(dst); err != nil {
			d.wrongType(path, "must be a number")
		}
	}
}

func (d *decoder) duration(dst *time.Duration) fieldFunc {
	return func(n *yaml.Node, path string) {
		if !isScalar(n, "!!str") {
			d.wrongType(path, "must be a duration such as 30s")
			return
		}
		v, err := time.ParseDuration(n.Value)
		if err != nil {
			d.wrongType(path, "must be a duration such as 30s")
			return
		}
		*dst = v
	}
}

// headers decodes a mapping of header names to string values. Values are never quoted in a problem.
// strings decodes a sequence of strings.
func (d *decoder) strings(dst *[]string) fieldFunc {
	return func(n *yaml.Node, path string) {
		if n.Kind != yaml.SequenceNode {
			d.wrongType(path, "must be a list of strings")
			return
		}
		var out []string
		for i, item := range n.Content {
			item = resolve(item)
			if !isScalar(item, "!!str") {
				d.wrongType(fmt.Sprintf("%s[%d]", path, i), "must be a string")
				continue
			}
			out = append(out, item.Value)
		}
		*dst = out
	}
}

// policy decodes a column policy: strict, null (written bare or quoted) or default.
func (d *decoder) policy(dst *string) fieldFunc {
	return func(n *yaml.Node, path string) {
		switch {
		case isNull(n):
			*dst = "null"
		case isScalar(n, "!!str"):
			*dst = n.Value
		default:
			d.wrongType(path, "must be strict, null or default")
		}
	}
}

func (d *decoder) boolean(dst *bool) fieldFunc {
	return func(n *yaml.Node, path string) {
		if !isScalar(n, "!!bool") {
			d.wrongType(path, "must be true or false")
			return
		}
		*dst = n.Value == "true" || n.Value == "True" || n.Value == "TRUE"
	}
}

// columns decodes a sink's columns: the string from_table, or a list of columns.
func (d *decoder) columns(sink *Sink) fieldFunc {
	return func(n *yaml.Node, path string) {
		if isScalar(n, "!!str") && n.Value == "from_table" {
			sink.FromTable = true
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.wrongType(path, "must be from_table or a list of columns")
			return
		}
		sink.Columns = make([]SinkColumn, len(n.Content))
		for i, item := range n.Content {
			c := &sink.Columns[i]
			d.object(map[string]fieldFunc{
				"name":     d.str(&c.Name),
				"type":     d.str(&c.Type),
				"from":     d.str(&c.From),
				"on_error": d.policy(&c.OnError),
			})(resolve(item), fmt.Sprintf("%s[%d]", path, i))
		}
	}
}

func (d *decoder) headers(dst *map[string]string) fieldFunc {
	return func(n *yaml.Node, path string) {
		if n.Kind != yaml.MappingNode {
			d.wrongType(path, "must be a mapping of header names to values")
			return
		}
		m := make(map[string]string, len(n.Content)/2)
		seen := make(map[string]bool, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, value := resolve(n.Content[i]), resolve(n.Content[i+1])
			if !isScalar(key, "!!str") {
				d.add(path, "header names must be strings")
				continue
			}
			p := join(path, key.Value)
			switch {
			case seen[key.Value]:
				d.add(p, "duplicate header")
			case !isScalar(value, "!!str"):
				d.wrongType(p, "must be a string")
			default:
				m[key.Value] = value.Value
			}
			seen[key.Value] = true
		}
		if len(m) > 0 {
			*dst = m
		}
	}
}

// resolve follows aliases to the node they name. Following them cannot blow up: the spec has a fixed
// shape, so every position is visited at most once.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return isScalar(n, "!!null")
}

func isScalar(n *yaml.Node, tag string) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == tag
}

func join(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}
