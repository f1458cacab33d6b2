package jobspec_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluicedata/sluice/pkg/jobspec"
)

const exampleDoc = `
name: users
source:
  type: http
  url: http://127.0.0.1:8081/api/users
  records_path: data
  key: id
  pagination:
    type: offset
    offset_param: offset
    limit_param: limit
    page_size: 500
    total_path: total
  headers: {Authorization: "Bearer ${SOURCE_TOKEN}"}
  timeout: 30s
  max_retries: 3
tasks: 16
sink:
  table: users
`

// exampleSpec is what Parse makes of exampleDoc.
func exampleSpec() jobspec.Spec {
	return jobspec.Spec{
		Name: "users",
		Source: jobspec.Source{
			Type:        "http",
			URL:         "http://127.0.0.1:8081/api/users",
			RecordsPath: "data",
			Key:         "id",
			Pagination: jobspec.Pagination{
				Type:        "offset",
				OffsetParam: "offset",
				PageParam:   "page",
				LimitParam:  "limit",
				PageSize:    500,
				FirstPage:   1,
				TotalPath:   "total",
			},
			Headers:    map[string]string{"Authorization": "Bearer ${SOURCE_TOKEN}"},
			Timeout:    30 * time.Second,
			MaxRetries: 3,
		},
		Tasks: 16,
		Sink:  jobspec.Sink{Table: "users"},
	}
}

// minimalSpec is what Parse makes of a document with only the required fields.
func minimalSpec() jobspec.Spec {
	return jobspec.Spec{
		Name: "users",
		Source: jobspec.Source{
			Type: "http",
			URL:  "http://api.example.com/users",
			Key:  "id",
			Pagination: jobspec.Pagination{
				Type:        "offset",
				OffsetParam: "offset",
				PageParam:   "page",
				LimitParam:  "limit",
				PageSize:    100,
				FirstPage:   1,
			},
			Timeout:    30 * time.Second,
			MaxRetries: 3,
		},
		Tasks: 1,
		Sink:  jobspec.Sink{Table: "users"},
	}
}

func mustParse(t testing.TB, doc string) *jobspec.Spec {
	t.Helper()
	s, err := jobspec.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return s
}

// problemsOf returns the problems of a *jobspec.Error, failing the test for any other error.
func problemsOf(t testing.TB, err error) []jobspec.Problem {
	t.Helper()
	var e *jobspec.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *jobspec.Error", err, err)
	}
	return e.Problems
}

func TestParseValid(t *testing.T) {
	withPage := minimalSpec()
	withPage.Source.Pagination = jobspec.Pagination{
		Type: "page", OffsetParam: "offset", PageParam: "p", LimitParam: "per_page", PageSize: 50, FirstPage: 0,
	}
	withPage.Source.MaxRetries = 0
	withPage.Source.MaxRecords = 1000
	withPage.Source.RateLimit = 2.5
	withPage.Source.Timeout = 1500 * time.Millisecond
	withPage.Tasks = 4

	tests := []struct {
		name string
		doc  string
		want jobspec.Spec
	}{
		{name: "example", doc: exampleDoc, want: exampleSpec()},
		{
			name: "defaults",
			doc:  "name: users\nsource: {url: 'http://api.example.com/users', key: id}\nsink: {table: users}\n",
			want: minimalSpec(),
		},
		{
			name: "null means absent",
			doc: `
name: users
source:
  type: null
  url: http://api.example.com/users
  key: id
  pagination: ~
  headers:
  timeout:
  max_retries: null
tasks: null
sink: {table: users}
`,
			want: minimalSpec(),
		},
		{
			name: "json with explicit zeros",
			doc: `{"name": "users", "tasks": 4, "sink": {"table": "users"},
				"source": {"url": "http://api.example.com/users", "key": "id", "max_retries": 0,
				"max_records": 1000, "rate_limit": 2.5, "timeout": "1.5s",
				"pagination": {"type": "page", "page_param": "p", "limit_param": "per_page",
				"page_size": 50, "first_page": 0}}}`,
			want: withPage,
		},
		{
			name: "anchors and aliases",
			doc: `
name: &n users
source: {url: 'http://api.example.com/users', key: id}
sink: {table: *n}
`,
			want: minimalSpec(),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mustParse(t, tc.doc)
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("Parse:\n got %+v\nwant %+v", *got, tc.want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestParseProblems(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []jobspec.Problem
	}{
		{
			name: "many mistakes",
			doc: `
name: Users!
source:
  type: ftp
  url: https://alice:hunter2@api.example.com/users?offset=5
  key: meta..id
  records_path: .data
  pagination:
    type: keyset
    limit_param: lim it
    page_size: 0
    first_page: -1
    total_path: "total."
  headers:
    Bad Header: x
    Authorization: "Bearer ${SOURCE_TOKEN"
    X-Api-Key: "${1BAD}"
    x-api-key: ok
    X-Trace: "a\r\nb"
  timeout: 20m
  max_retries: 101
  rate_limit: -1
tasks: 0
sink:
  table: 1users
`,
			want: []jobspec.Problem{
				{"name", "must be 1 to 63 lower-case letters, digits, '_' or '-', starting with a letter or digit"},
				{"sink.table", "must be 1 to 206 letters, digits or '_', not starting with a digit"},
				{"source.headers.Authorization", "value has a malformed ${VAR} reference: unclosed ${"},
				{"source.headers.Bad Header", "must be a valid header name (letters, digits and !#$%&'*+-.^_`|~)"},
				{"source.headers.X-Api-Key", "value has a malformed ${VAR} reference: the name must match [A-Za-z_][A-Za-z0-9_]*, or be file: and an absolute path"},
				{"source.headers.X-Trace", "value must not contain control characters"},
				{"source.headers.x-api-key", "duplicates another header: names are case-insensitive"},
				{"source.key", "must be a dotted path of field names, such as id or meta.id"},
				{"source.max_retries", "must be between 0 and 100"},
				{"source.pagination.first_page", "must be 0 or more"},
				{"source.pagination.limit_param", "must contain only letters, digits and - . _ ~ [ ]"},
				{"source.pagination.page_size", "must be between 1 and 100000"},
				{"source.pagination.total_path", "must be a dotted path of field names, such as total or meta.count"},
				{"source.pagination.type", `must be "offset", "page", "cursor", "next_url" or "link_header"`},
				{"source.rate_limit", "must be a finite number, 0 or more"},
				{"source.records_path", "must be a dotted path of field names, such as data or result.items"},
				{"source.timeout", "must be between 1ms and 10m0s"},
				{"source.type", `must be "http" or "postgres"`},
				{"source.url", "must not contain a user name or password: pass credentials in headers with ${VAR}"},
				{"tasks", "must be between 1 and 10000"},
			},
		},
		{
			name: "unknown fields",
			doc: `
name: users
nmae: users
source:
  url: http://api.example.com/users
  key: id
  pagination: {pgae_size: 5}
  extra: 1
sink: {table: users, engine: MergeTree}
`,
			want: []jobspec.Problem{
				{"nmae", "unknown field"},
				{"sink.engine", "unknown field"},
				{"source.extra", "unknown field"},
				{"source.pagination.pgae_size", "unknown field"},
			},
		},
		{
			name: "wrong types",
			doc: `
name: 5
source:
  url: [http://api.example.com/users]
  key: {a: 1}
  pagination:
    page_size: "500"
    first_page: 1.5
  headers:
    X-Count: 5
  timeout: 30
  max_retries: true
  max_records: -1
  rate_limit: fast
tasks: "16"
sink: users
`,
			want: []jobspec.Problem{
				{"name", "must be a string"},
				{"sink", "must be a mapping"},
				{"source.headers.X-Count", "must be a string"},
				{"source.key", "must be a string"},
				{"source.max_records", "must be 0 or more"},
				{"source.max_retries", "must be an integer"},
				{"source.pagination.first_page", "must be an integer"},
				{"source.pagination.page_size", "must be an integer"},
				{"source.rate_limit", "must be a number"},
				{"source.timeout", "must be a duration such as 30s"},
				{"source.url", "must be a string"},
				{"tasks", "must be an integer"},
			},
		},
		{
			name: "wrong types in json",
			doc:  `{"name": "users", "source": "http://api.example.com", "tasks": 1.5, "sink": {"table": "users"}}`,
			want: []jobspec.Problem{
				{"source", "must be a mapping"},
				{"tasks", "must be an integer"},
			},
		},
		{
			name: "duplicate fields",
			doc: `{"name": "users", "name": "orders", "sink": {"table": "users"},
				"source": {"url": "http://api.example.com/users", "key": "id", "headers": {"A": "1", "A": "2"}}}`,
			want: []jobspec.Problem{
				{"name", "duplicate field"},
				{"source.headers.A", "duplicate header"},
			},
		},
		{
			name: "out of range integers",
			doc: `
name: users
source: {url: 'http://api.example.com/users', key: id, max_records: 18446744073709551616}
tasks: 9223372036854775808
sink: {table: users}
`,
			want: []jobspec.Problem{
				{"source.max_records", "must be an integer"},
				{"tasks", "is out of range"},
			},
		},
		{
			name: "max_records past the bound, a rate limit below the least",
			doc: `
name: users
source: {url: 'http://api.example.com/users', key: id, max_records: 9223372036854775807, rate_limit: 0.001}
sink: {table: users}
`,
			want: []jobspec.Problem{
				{"source.max_records", "must be at most 1000000000000"},
				{"source.rate_limit", "must be 0 (no limit) or at least 0.1 requests per second"},
			},
		},
		{
			name: "empty document",
			doc:  "# nothing here\n",
			want: []jobspec.Problem{
				{"name", "required"},
				{"sink.table", "required"},
				{"source.key", "required"},
				{"source.url", "required"},
			},
		},
		{
			name: "explicit empty strings are not defaulted",
			doc: `
name: users
source:
  type: ""
  url: http://api.example.com/users
  key: id
  pagination: {type: page, page_param: "", limit_param: ""}
sink: {table: users}
`,
			want: []jobspec.Problem{
				{"source.pagination.limit_param", "required"},
				{"source.pagination.page_param", "required"},
				{"source.type", `must be "http" or "postgres"`},
			},
		},
		{
			name: "url",
			doc: `
name: users
source:
  url: "ftp://api.example.com/users"
  key: id
sink: {table: users}
`,
			want: []jobspec.Problem{{"source.url", "must be an absolute http or https URL"}},
		},
		{
			name: "url without host",
			doc:  "name: users\nsource: {url: 'http:///users', key: id}\nsink: {table: users}\n",
			want: []jobspec.Problem{{"source.url", "must have a host"}},
		},
		{
			name: "url with pagination parameters",
			doc: `
name: users
source:
  url: "https://api.example.com/users?page=2&per_page=10&sort=id&api_key=${SOURCE_KEY}"
  key: id
  pagination: {type: page, limit_param: per_page}
sink: {table: users}
`,
			want: []jobspec.Problem{
				{"source.url", "must not contain ${VAR}: only header values are expanded"},
				{"source.url", `must not set the query parameter "page": pagination sets it`},
				{"source.url", `must not set the query parameter "per_page": pagination sets it`},
			},
		},
		{
			name: "same parameter twice",
			doc: `
name: users
source:
  url: "https://api.example.com/users"
  key: id
  pagination: {offset_param: n, limit_param: n}
sink: {table: users}
`,
			want: []jobspec.Problem{{"source.pagination.limit_param", "must differ from offset_param"}},
		},
		{
			name: "not a mapping",
			doc:  "- name: users\n",
			want: []jobspec.Problem{{"", "must be a mapping with the fields name, source, tasks and sink"}},
		},
		{
			name: "two documents",
			doc:  "name: users\n---\nname: orders\n",
			want: []jobspec.Problem{{"", "must be a single document"}},
		},
		{
			name: "syntax error",
			doc:  "name: [users\n",
			want: []jobspec.Problem{{"", "invalid YAML or JSON: line 1: did not find expected ',' or ']'"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := jobspec.Parse([]byte(tc.doc))
			got := problemsOf(t, err)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestParseKeepsSecretsOut(t *testing.T) {
	doc := `
name: users
source:
  url: "https://alice:hunter2@api.example.com/users"
  key: id
  headers:
    Authorization: "Bearer s3cret ${TOKEN"
    X-Api-Key: "k3y\n${9}"
    Bad Name: "v4lue"
sink: {table: users}
`
	_, err := jobspec.Parse([]byte(doc))
	msg := err.Error()
	for _, secret := range []string{"alice", "hunter2", "s3cret", "Bearer", "k3y", "v4lue"} {
		if strings.Contains(msg, secret) {
			t.Errorf("error %q contains %q", msg, secret)
		}
	}
}

func TestParseBoundsProblems(t *testing.T) {
	doc := "name: users\n" + strings.Repeat("x: 1\n", 1000)
	_, err := jobspec.Parse([]byte(doc))
	got := problemsOf(t, err)
	if len(got) != 101 {
		t.Fatalf("got %d problems, want 101", len(got))
	}
	want := jobspec.Problem{Message: "too many problems: 903 more not shown"}
	if got[0] != want {
		t.Errorf("first problem = %q, want %q", got[0], want)
	}
}

// TestParseBoundsWhatAliasesExpand: a small document whose aliases expand it past what a spec may be
// is refused as a whole before it is decoded, in bounded memory; one nested past the spec's shape
// too. Problems that quote long values are cut, and past a thousand only counted.
func TestParseBoundsWhatAliasesExpand(t *testing.T) {
	long := strings.Repeat("y", 8000)
	head := "name: x\nsource: {url: 'http://a.example/x', key: id}\n"
	for name, tt := range map[string]struct{ doc, want string }{
		"columns of one anchor": {head + "sink: {table: t, columns: [&a {name: " + long + ", type: Int64}" + strings.Repeat(", *a", 2000) + "]}\n",
			"larger than 1048576 bytes once its aliases are expanded"},
		"anchors of anchors": {head + "sink: {table: t}\nx0: &a0 [" + long + "]\n" + func() string {
			var b strings.Builder
			for i := 1; i < 30; i++ {
				fmt.Fprintf(&b, "x%d: &a%d [*a%d, *a%d]\n", i, i, i-1, i-1)
			}
			return b.String()
		}(), "larger than 1048576 bytes once its aliases are expanded"},
		"deep": {head + "sink: {table: t}\nx: " + strings.Repeat("[", 40) + strings.Repeat("]", 40) + "\n", "nests deeper than 32 levels"},
	} {
		t.Run(name, func(t *testing.T) {
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			_, err := jobspec.Parse([]byte(tt.doc))
			runtime.ReadMemStats(&m1)
			got := problemsOf(t, err)
			if len(got) != 1 || !strings.Contains(got[0].Message, tt.want) {
				t.Fatalf("%d bytes: %v, want one problem saying %q", len(tt.doc), got, tt.want)
			}
			if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 8<<20 {
				t.Fatalf("refusing %d bytes allocated %d MiB", len(tt.doc), alloc>>20)
			}
		})
	}

	// Long values in many problems: each problem cut, the answer bounded.
	doc := head + "sink: {table: t, columns: [" + strings.TrimSuffix(strings.Repeat("{name: "+strings.Repeat("n", 700)+", type: Int64}, ", 1100), ", ") + "]}\n"
	_, err := jobspec.Parse([]byte(doc))
	if n := len(err.Error()); n > 101*(256+512+8) {
		t.Fatalf("the problems of %d bytes of spec are %d bytes", len(doc), n)
	}
	if got := problemsOf(t, err); !strings.HasPrefix(got[0].Message, "too many problems:") {
		t.Fatalf("first problem %v", got[0])
	}
}

func TestErrorText(t *testing.T) {
	e := &jobspec.Error{Problems: []jobspec.Problem{
		{"tasks", "must be between 1 and 10000"},
		{"", "must be a single document"},
		{"name", "required"},
	}}
	want := "must be a single document\nname: required\ntasks: must be between 1 and 10000"
	if got := e.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*jobspec.Spec)
		want   []jobspec.Problem
	}{
		{
			name:   "zero spec",
			mutate: func(s *jobspec.Spec) { *s = jobspec.Spec{} },
			want: []jobspec.Problem{
				{"name", "required"},
				{"sink.table", "required"},
				{"source.key", "required"},
				{"source.pagination.limit_param", "required"},
				{"source.pagination.page_size", "must be between 1 and 100000"},
				{"source.pagination.type", `must be "offset", "page", "cursor", "next_url" or "link_header"`},
				{"source.timeout", "must be between 1ms and 10m0s"},
				{"source.type", `must be "http" or "postgres"`},
				{"source.url", "required"},
				{"tasks", "must be between 1 and 10000"},
			},
		},
		{
			name:   "longest name and table",
			mutate: func(s *jobspec.Spec) { s.Name = strings.Repeat("a", 63); s.Sink.Table = strings.Repeat("T", 206) },
		},
		{
			name:   "name too long",
			mutate: func(s *jobspec.Spec) { s.Name = strings.Repeat("a", 64) },
			want:   []jobspec.Problem{{"name", "must be 1 to 63 lower-case letters, digits, '_' or '-', starting with a letter or digit"}},
		},
		{
			name:   "table too long",
			mutate: func(s *jobspec.Spec) { s.Sink.Table = strings.Repeat("T", 207) },
			want:   []jobspec.Problem{{"sink.table", "must be 1 to 206 letters, digits or '_', not starting with a digit"}},
		},
		{
			name: "limits",
			mutate: func(s *jobspec.Spec) {
				s.Source.Timeout = 10 * time.Minute
				s.Source.MaxRetries = 100
				s.Source.Pagination.PageSize = 100000
				s.Tasks = 10000
			},
		},
		{
			name: "past the limits",
			mutate: func(s *jobspec.Spec) {
				s.Source.Timeout = time.Millisecond - 1
				s.Source.MaxRetries = -1
				s.Source.Pagination.PageSize = 100001
				s.Tasks = 10001
			},
			want: []jobspec.Problem{
				{"source.max_retries", "must be between 0 and 100"},
				{"source.pagination.page_size", "must be between 1 and 100000"},
				{"source.timeout", "must be between 1ms and 10m0s"},
				{"tasks", "must be between 1 and 10000"},
			},
		},
		{
			name: "page parameters are only checked for page pagination",
			mutate: func(s *jobspec.Spec) {
				s.Source.Pagination.PageParam = ""
				s.Source.Pagination.FirstPage = 0
			},
		},
		{
			name: "json api parameter names",
			mutate: func(s *jobspec.Spec) {
				s.Source.Pagination.OffsetParam = "page[offset]"
				s.Source.Pagination.LimitParam = "page[limit]"
			},
		},
		{
			name:   "not a finite rate",
			mutate: func(s *jobspec.Spec) { s.Source.RateLimit = posInf() },
			want:   []jobspec.Problem{{"source.rate_limit", "must be a finite number, 0 or more"}},
		},
		{
			name:   "empty header name",
			mutate: func(s *jobspec.Spec) { s.Source.Headers = map[string]string{"": "x"} },
			want:   []jobspec.Problem{{"source.headers.", "must be a valid header name (letters, digits and !#$%&'*+-.^_`|~)"}},
		},
		{
			name:   "literal dollars in a header",
			mutate: func(s *jobspec.Spec) { s.Source.Headers = map[string]string{"X-Price": "$5 $VAR $ {x} $${SOURCE_A}"} },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := exampleSpec()
			tc.mutate(&s)
			var got []jobspec.Problem
			if err := s.Validate(); err != nil {
				got = problemsOf(t, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func posInf() float64 {
	var zero float64
	return 1 / zero
}

func TestJSON(t *testing.T) {
	s := exampleSpec()
	want := `{"name":"users","source":{"type":"http","url":"http://127.0.0.1:8081/api/users",` +
		`"records_path":"data","key":"id","pagination":{"type":"offset","offset_param":"offset",` +
		`"page_param":"page","limit_param":"limit","page_size":500,"first_page":1,"total_path":"total"},` +
		`"headers":{"Authorization":"Bearer ${SOURCE_TOKEN}"},"timeout":"30s","max_retries":3},` +
		`"tasks":16,"sink":{"table":"users"}}`
	if got := string(s.JSON()); got != want {
		t.Errorf("JSON() =\n%s\nwant\n%s", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	full := exampleSpec()
	full.Source.MaxRecords = jobspec.MaxRecords
	full.Source.RateLimit = 0.25
	full.Source.Concurrency = 2
	full.Source.MaxRetries = 0
	full.Source.Pagination.Type = "page"
	full.Source.Pagination.FirstPage = 0
	full.Source.Headers["X-Odd"] = `<&> "quoted" \ ${SOURCE_A}${SOURCE_B} é`

	tests := []struct {
		name string
		spec jobspec.Spec
	}{
		{name: "example", spec: exampleSpec()},
		{name: "minimal", spec: minimalSpec()},
		{name: "every field", spec: full},
	}
	for _, tc := range tests {
		t.Run(tc.name+"/Parse(JSON())", func(t *testing.T) {
			got := mustParse(t, string(tc.spec.JSON()))
			if !reflect.DeepEqual(*got, tc.spec) {
				t.Errorf("got %+v\nwant %+v", *got, tc.spec)
			}
		})
		t.Run(tc.name+"/json.Unmarshal", func(t *testing.T) {
			var got jobspec.Spec
			if err := json.Unmarshal(tc.spec.JSON(), &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.spec) {
				t.Errorf("got %+v\nwant %+v", got, tc.spec)
			}
		})
		t.Run(tc.name+"/Parse(yaml.Marshal())", func(t *testing.T) {
			data, err := yaml.Marshal(&tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			got := mustParse(t, string(data))
			if !reflect.DeepEqual(*got, tc.spec) {
				t.Errorf("got %+v\nwant %+v\nfrom\n%s", *got, tc.spec, data)
			}
		})
	}
}

func TestJSONOfInvalidSpec(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*jobspec.Spec)
		want   []jobspec.Problem
	}{
		{
			name:   "rate limit not a number",
			mutate: func(s *jobspec.Spec) { s.Source.RateLimit = posInf() - posInf() },
			want:   []jobspec.Problem{{"source.rate_limit", "must be a number"}},
		},
		{
			name:   "zero values",
			mutate: func(s *jobspec.Spec) { s.Tasks, s.Source.Timeout, s.Source.Pagination.PageSize = 0, 0, 0 },
			want: []jobspec.Problem{
				{"source.pagination.page_size", "must be between 1 and 100000"},
				{"source.timeout", "must be between 1ms and 10m0s"},
				{"tasks", "must be between 1 and 10000"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := exampleSpec()
			tc.mutate(&s)
			_, err := jobspec.Parse(s.JSON())
			got := problemsOf(t, err)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// TestCrawlPaginations parses each crawl kind, round-trips it through the task's proto, and
// refuses what a crawl cannot do.
func TestCrawlPaginations(t *testing.T) {
	base := "name: c\nsource:\n  url: https://api.example/items\n  key: id\n  pagination: "
	for _, pg := range []string{
		`{type: cursor, cursor_param: cursor, cursor_path: meta.next, has_more_path: meta.more, max_pages: 50}`,
		`{type: next_url, next_url_path: links.next}`,
		`{type: link_header, page_size: 250}`,
		`{type: link_header, max_pages: 10000000}`,
	} {
		s, err := jobspec.Parse([]byte(base + pg + "\nsink: {table: c}\n"))
		if err != nil {
			t.Fatalf("%s: %v", pg, err)
		}
		back, err := jobspec.SourceFromProto(s.SourceProto())
		if err != nil || !reflect.DeepEqual(back, s.Source) {
			t.Fatalf("%s: round trip gave %+v, %v; want %+v", pg, back, err, s.Source)
		}
	}
	for _, tt := range []struct{ doc, path, message string }{
		{`{type: cursor, cursor_param: c}` + "\nsink: {table: c}", "source.pagination.cursor_path", "required"},
		{`{type: next_url}` + "\nsink: {table: c}", "source.pagination.next_url_path", "required"},
		{`{type: link_header, total_path: total}` + "\nsink: {table: c}", "source.pagination.total_path", "a crawl has no total to split the job by: leave it out"},
		{`{type: link_header}` + "\ntasks: 4\nsink: {table: c}", "tasks", "must be 1: a link_header crawl reads one page after another"},
		{`{type: offset, cursor_path: next}` + "\nsink: {table: c}", "source.pagination", "cursor_param, cursor_path, next_url_path, has_more_path and max_pages are for cursor, next_url and link_header pagination"},
		{`{type: cursor, cursor_param: c, cursor_path: next, max_pages: 10000001}` + "\nsink: {table: c}", "source.pagination.max_pages", "must be between 1 and 10000000, or 0 (or left out) for the default bound"},
		{`{type: cursor, cursor_param: c, cursor_path: next, max_pages: -1}` + "\nsink: {table: c}", "source.pagination.max_pages", "must be between 1 and 10000000, or 0 (or left out) for the default bound"},
	} {
		_, err := jobspec.Parse([]byte(base + tt.doc + "\n"))
		var perr *jobspec.Error
		if !errors.As(err, &perr) || len(perr.Problems) != 1 || perr.Problems[0].Path != tt.path || perr.Problems[0].Message != tt.message {
			t.Errorf("%s: %v, want %s: %s", tt.doc, err, tt.path, tt.message)
		}
	}
}

// TestSlices parses time and key slices (bounds written as YAML times and integers), round-trips
// them, and refuses what cannot be sliced.
func TestSlices(t *testing.T) {
	base := "name: s\nsource:\n  url: https://api.example/items\n  key: id\n"
	for _, doc := range []string{
		"  slices: {type: time, param_from: since, param_to: until, start: 2024-01-01T00:00:00Z, end: 2024-02-01T00:00:00Z, step: 24h, format: date}\n",
		"  slices: {type: key_range, param_from: id_from, param_to: id_to, start: 0, end: 1000000, step: 10000}\n" +
			"  pagination: {type: cursor, cursor_param: c, cursor_path: next}\n",
	} {
		s, err := jobspec.Parse([]byte(base + doc + "sink: {table: s}\n"))
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		back, err := jobspec.SourceFromProto(s.SourceProto())
		if err != nil || !reflect.DeepEqual(back, s.Source) {
			t.Fatalf("%s: round trip gave %+v, %v; want %+v", doc, back, err, s.Source)
		}
		again, err := jobspec.Parse(s.JSON())
		if err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("%s: Parse(JSON()) gave %+v, %v", doc, again, err)
		}
	}
	for _, tt := range []struct{ doc, path, message string }{
		{"  slices: {type: time, param_from: a, param_to: b, start: 2024-02-01T00:00:00Z, end: 2024-01-01T00:00:00Z, step: 1h}\n",
			"source.slices", "start must be before end"},
		{"  slices: {type: key_range, param_from: a, param_to: b, start: 0, end: 100000, step: 1}\n",
			"source.slices", "make 100000 slices, more than 10000: take a longer step"},
		{"  slices: {type: key_range, param_from: limit, param_to: b, start: 0, end: 10, step: 1}\n",
			"source.slices.param_from", "must differ from the other query parameters of the job"},
		// Across the whole of int64: 2^64-1 keys, which a rounding sum wrapped to 0 windows.
		{"  slices: {type: key_range, param_from: a, param_to: b, start: -9223372036854775808, end: 9223372036854775807, step: 2}\n",
			"source.slices", "make 2147483647 slices, more than 10000: take a longer step"},
		{"  slices: {type: key_range, param_from: a, param_to: b, start: -9223372036854775808, end: 9223372036854775807, step: 1}\n",
			"source.slices", "make 2147483647 slices, more than 10000: take a longer step"},
		{"  slices: {type: key_range, param_from: a, param_to: b, start: -9223372036854775808, end: 9223372036854775807, step: 9223372036854775807}\n",
			"", ""},
		{"  slices: {type: time, param_from: a, param_to: b, start: 0001-01-01T00:00:00Z, end: 9999-12-31T00:00:00Z, step: 257h}\n",
			"source.slices", "make 341049 slices, more than 10000: take a longer step"},
		{"  slices: {type: time, param_from: a, param_to: b, start: 2024-01-01T00:00:00Z, end: 2024-02-01T00:00:00Z, step: 36h, format: date}\n",
			"source.slices", "date bounds need whole days: a step of a multiple of 24h, start and end at midnight UTC"},
		{"  slices: {type: keys, param_from: a, param_to: b, start: 0, end: 10, step: 1}\n",
			"source.slices.type", `must be "time" or "key_range"`},
		{"  slices: {type: key_range, param_from: a, param_to: b, start: 0, end: 10, step: 1}\ntasks: 3\n",
			"tasks", "must be 1: the slices make the tasks"},
	} {
		_, err := jobspec.Parse([]byte(base + tt.doc + "sink: {table: s}\n"))
		if tt.path == "" && tt.message == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.doc, err)
			}
			continue
		}
		var perr *jobspec.Error
		if !errors.As(err, &perr) || len(perr.Problems) != 1 || perr.Problems[0].Path != tt.path || perr.Problems[0].Message != tt.message {
			t.Errorf("%s: %v, want %s: %s", tt.doc, err, tt.path, tt.message)
		}
	}
}

// TestAuth parses each kind of credentials, round-trips them, and refuses a secret written out.
func TestAuth(t *testing.T) {
	base := "name: a\nsource:\n  url: https://api.example/items\n  key: id\n  auth: "
	for _, doc := range []string{
		`{type: api_key, name: X-Api-Key, value: "${SOURCE_KEY}"}`,
		`{type: api_key, in: query, name: api_key, value: "${file:/run/secrets/key}"}`,
		`{type: basic, username: reader, password: "${SOURCE_PASSWORD}"}`,
		`{type: oauth2_client_credentials, token_url: "https://auth.example/token", client_id: "${SOURCE_ID}", client_secret: "${file:/run/secrets/secret}", scopes: [read, "items:list"]}`,
	} {
		s, err := jobspec.Parse([]byte(base + doc + "\nsink: {table: a}\n"))
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		back, err := jobspec.SourceFromProto(s.SourceProto())
		if err != nil || !reflect.DeepEqual(back, s.Source) {
			t.Fatalf("%s: round trip gave %+v, %v; want %+v", doc, back, err, s.Source)
		}
		if again, err := jobspec.Parse(s.JSON()); err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("%s: Parse(JSON()) gave %+v, %v", doc, again, err)
		}
	}
	for _, tt := range []struct{ doc, path, message string }{
		{`{type: api_key, name: X-Api-Key, value: hunter2}`, "source.auth.value", "must be one reference, ${SOURCE_…} or ${file:/path}: a secret is never written in the spec"},
		{`{type: basic, username: u, password: "pre-${SOURCE_P}"}`, "source.auth.password", "must be one reference, ${SOURCE_…} or ${file:/path}: a secret is never written in the spec"},
		{`{type: api_key, name: k, value: "${file:../etc/passwd}"}`, "source.auth.value", "must be one reference, ${SOURCE_…} or ${file:/path}: a secret is never written in the spec"},
		{`{type: api_key, name: k, value: "${SOURCE_A}literal}"}`, "source.auth.value", "must be one reference, ${SOURCE_…} or ${file:/path}: a secret is never written in the spec"},
		{`{type: api_key, name: k, value: "${HOME}"}`, "source.auth.value", "has a malformed ${VAR} reference: only variables named SOURCE_… can be used in headers"},
		{`{type: oauth2_client_credentials, token_url: "ftp://x", client_id: i, client_secret: "${SOURCE_S}"}`, "source.auth.token_url", "must be an absolute http or https URL without credentials"},
		{`{type: basic, username: u, password: "${SOURCE_P}", token_url: "https://x"}`, "source.auth.token_url", "is not used by auth type basic"},
		{`{type: kerberos}`, "source.auth.type", `must be "api_key", "basic" or "oauth2_client_credentials"`},
		{`{type: api_key, in: query, name: limit, value: "${SOURCE_K}"}`, "source.auth.name", "must differ from the other query parameters of the job"},
		{`{type: basic, username: u, password: "${SOURCE_P}"}` + "\n  headers: {authorization: \"${SOURCE_X}\"}", "source.headers.authorization", "is the header source.auth sets: leave one of them out"},
		{`{type: oauth2_client_credentials, token_url: "http://auth.example/token", client_id: i, client_secret: "${SOURCE_S}"}`, "source.auth.token_url", "must be https: the client secret is sent to it (http only to a loopback address)"},
	} {
		_, err := jobspec.Parse([]byte(base + tt.doc + "\nsink: {table: a}\n"))
		var perr *jobspec.Error
		if !errors.As(err, &perr) || len(perr.Problems) != 1 || perr.Problems[0].Path != tt.path || perr.Problems[0].Message != tt.message {
			t.Errorf("%s: %v, want %s: %s", tt.doc, err, tt.path, tt.message)
		}
	}
}

// TestPostgres parses a postgres source, with a table and with a query, round-trips it, and
// refuses what does not belong to it.
func TestPostgres(t *testing.T) {
	base := "name: p\nsource:\n  type: postgres\n  dsn: \"${SOURCE_PG_DSN}\"\n  key: id\n"
	for _, doc := range []string{
		"  table: public.orders\n",
		"  query: SELECT id, total FROM orders WHERE total > 0\n  batch_size: 500\n  rate_limit: 20\n  concurrency: 2\ntasks: 16\n",
	} {
		s, err := jobspec.Parse([]byte(base + doc + "sink: {table: p}\n"))
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		if s.Source.Pagination != (jobspec.Pagination{}) || s.Source.BatchSize == 0 {
			t.Fatalf("%s: pagination %+v, batch size %d: want none, and a batch size", doc, s.Source.Pagination, s.Source.BatchSize)
		}
		back, err := jobspec.SourceFromProto(s.SourceProto())
		if err != nil || !reflect.DeepEqual(back, s.Source) {
			t.Fatalf("%s: round trip gave %+v, %v; want %+v", doc, back, err, s.Source)
		}
		if again, err := jobspec.Parse(s.JSON()); err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("%s: Parse(JSON()) gave %+v, %v", doc, again, err)
		}
	}
	if s, err := jobspec.Parse([]byte(base + "  table: t\nsink: {table: p}\n")); err != nil || s.Source.BatchSize != jobspec.DefaultBatchSize {
		t.Fatalf("default batch size: %+v, %v", s, err)
	}
	for _, tt := range []struct{ doc, path, message string }{
		{"  table: t\n  dsn: postgres://u:hunter2@db/x\n", "source.dsn", "must be one reference, ${SOURCE_…} or ${file:/path}: a connection string holds a password"},
		{"", "source.table", "required: a table, or a query in source.query"},
		{"  table: t\n  query: SELECT 1 AS id\n", "source.query", "leave it out: source.table is set"},
		{"  table: \"t; DROP TABLE x\"\n", "source.table", "must be name or schema.name, each of letters, digits, '_' or '$', not starting with a digit"},
		{"  query: DELETE FROM t\n", "source.query", "must be one SELECT (or WITH, VALUES, TABLE) statement"},
		{"  query: SELECT * FROM t;\n", "source.query", "must be one statement without a closing ';': sluice adds its own WHERE, ORDER BY and LIMIT around it"},
		{"  table: t\n  key: meta.id\n", "source.key", "must be a column name: letters, digits, '_' or '$', not starting with a digit"},
		{"  table: t\n  url: https://api.example/x\n", "source.url", "is for http sources: a postgres source is split by its key"},
		{"  table: t\n  pagination: {type: offset}\n", "source.pagination", "is for http sources: a postgres source is split by its key"},
		{"  table: t\n  batch_size: 0\n", "source.batch_size", "must be between 1 and 100000"},
	} {
		doc := strings.Replace(base, "  key: id\n", "", 1)
		if !strings.Contains(tt.doc, "key:") {
			doc += "  key: id\n"
		}
		if strings.Contains(tt.doc, "dsn:") {
			doc = strings.Replace(doc, "  dsn: \"${SOURCE_PG_DSN}\"\n", "", 1)
		}
		_, err := jobspec.Parse([]byte(doc + tt.doc + "sink: {table: p}\n"))
		var perr *jobspec.Error
		if !errors.As(err, &perr) || len(perr.Problems) != 1 || perr.Problems[0].Path != tt.path || perr.Problems[0].Message != tt.message {
			t.Errorf("%s: %v, want %s: %s", tt.doc, err, tt.path, tt.message)
		}
	}
	// An http source refuses a postgres field.
	_, err := jobspec.Parse([]byte("name: h\nsource:\n  url: https://api.example/x\n  key: id\n  table: t\nsink: {table: h}\n"))
	var perr *jobspec.Error
	if !errors.As(err, &perr) || len(perr.Problems) != 1 || perr.Problems[0].Path != "source.table" {
		t.Errorf("http source with a table: %v", err)
	}
}

// TestIncrementalAndSchedule parses incremental and scheduled jobs, round-trips them, and refuses
// settings that do not fit the source.
func TestIncrementalAndSchedule(t *testing.T) {
	http := "name: i\nsource:\n  url: https://api.example/items\n  key: id\n"
	pg := "name: i\nsource: {type: postgres, dsn: \"${SOURCE_PG_DSN}\", table: t, key: id}\n"
	for _, doc := range []string{
		http + "incremental: {cursor_field: meta.updated_at, param: updated_since, initial_value: 2024-01-01T00:00:00Z, lookback: 10m}\nschedule: {every: 15m}\n",
		pg + "incremental: {cursor_field: version, lookback: 100}\n",
	} {
		s, err := jobspec.Parse([]byte(doc + "sink: {table: i}\n"))
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		if in := s.SourceProto().GetIncremental(); in.GetCursorField() != s.Incremental.CursorField || in.GetParam() != s.Incremental.Param || in.GetSince() != "" {
			t.Fatalf("%s: incremental in the source %v", doc, in)
		}
		if again, err := jobspec.Parse(s.JSON()); err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("%s: Parse(JSON()) gave %+v, %v", doc, again, err)
		}
	}
	for _, tt := range []struct{ doc, path, message string }{
		{http + "incremental: {cursor_field: updated_at}\n", "incremental.param", "required: the query parameter that takes the mark"},
		{http + "incremental: {cursor_field: updated_at, param: limit}\n", "incremental.param", "must differ from the other query parameters of the job"},
		{http + "incremental: {param: since}\n", "incremental.cursor_field", "required"},
		{pg + "incremental: {cursor_field: updated_at, param: since}\n", "incremental.param", "is for http sources: a postgres source filters on cursor_field itself"},
		{pg + "incremental: {cursor_field: a.b}\n", "incremental.cursor_field", "must be a column name: letters, digits, '_' or '$', not starting with a digit"},
		{http + "incremental: {cursor_field: u, param: s, lookback: soon}\n", "incremental.lookback", "must be a duration such as 10m (time cursors) or an integer, 0 or more (integer cursors)"},
		{http + "schedule: {every: 10ms}\n", "schedule.every", "must be a duration of at least 1s, such as 15m"},
	} {
		_, err := jobspec.Parse([]byte(tt.doc + "sink: {table: i}\n"))
		var perr *jobspec.Error
		if !errors.As(err, &perr) || len(perr.Problems) != 1 || perr.Problems[0].Path != tt.path || perr.Problems[0].Message != tt.message {
			t.Errorf("%s: %v, want %s: %s", tt.doc, err, tt.path, tt.message)
		}
	}
}

// TestTypedSink parses typed sinks (declared columns, from_table) into the schema the loader
// takes, round-trips them, and refuses what the loader could not land, with the path of each
// problem.
func TestTypedSink(t *testing.T) {
	head := "name: orders\nsource:\n  url: https://api.example/orders\n  key: id\n"
	for _, doc := range []string{
		"sink:\n  table: orders\n  create: true\n  on_new_field: evolve\n  columns:\n    - {name: id, type: UInt64}\n    - {name: total, type: 'Decimal(18, 2)', from: amount.total, on_error: default}\n    - {name: k, from: $key}\n",
		"sink: {table: orders, columns: from_table, on_error: null}\n",
		"sink: {table: orders, columns: from_table, shared: true}\n",
	} {
		s, err := jobspec.Parse([]byte(head + doc))
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		if again, err := jobspec.Parse(s.JSON()); err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("%s: Parse(JSON()) gave %+v, %v", doc, again, err)
		}
		var back jobspec.Sink
		if y, err := yaml.Marshal(s.Sink); err != nil || yaml.Unmarshal(y, &back) != nil || !reflect.DeepEqual(back, s.Sink) {
			t.Fatalf("%s: the sink through YAML came back as %+v (%v)", doc, back, err)
		}
		if schema := s.Sink.Schema(s.Name); schema.GetSource() != "orders" || schema.GetTable() != "orders" || schema.GetShared() != s.Sink.Shared {
			t.Fatalf("%s: schema %v", doc, schema)
		}
	}
	s, _ := jobspec.Parse([]byte(head + "sink:\n  table: orders\n  create: true\n  columns:\n    - {name: id, type: UInt64}\n"))
	var names []string
	for _, c := range s.Sink.Schema(s.Name).Columns {
		names = append(names, c.Name+"="+c.From)
	}
	if got := strings.Join(names, " "); got != "id= _key=$key _source=$source _version=$version" {
		t.Fatalf("created table's columns: %s", got)
	}
	if s, _ := jobspec.Parse([]byte(head + "sink: {table: orders}\n")); s.Sink.Schema(s.Name) != nil {
		t.Fatal("the raw landing table has a schema")
	}
	// A raw landing table may be shared too; the field survives JSON.
	if s, err := jobspec.Parse([]byte(head + "sink: {table: orders, shared: true}\n")); err != nil || !s.Sink.Shared || !strings.Contains(string(s.JSON()), `"shared":true`) {
		t.Fatalf("shared raw sink: %+v, %v", s, err)
	}
	// sink.cluster names the cluster the table is on; it survives JSON, and must be a name.
	if s, err := jobspec.Parse([]byte(head + "sink: {table: orders, cluster: sluice}\n")); err != nil || s.Sink.Cluster != "sluice" ||
		!strings.Contains(string(s.JSON()), `"cluster":"sluice"`) {
		t.Fatalf("sink on a cluster: %+v, %v", s, err)
	}
	for _, tt := range []struct{ sink, path, message string }{
		{"{table: o, cluster: 'a b'}", "sink.cluster", "must be a cluster name of the servers' remote_servers: letters, digits or '_', not starting with a digit"},
		{"{table: o, columns: everything}", "sink.columns", "must be from_table or a list of columns"},
		{"{table: o, columns: [{name: id}]}", "sink.columns[0].type", "required"},
		{"{table: o, columns: [{name: id, type: Int128x}]}", "sink.columns[0].type", `column type "Int128x": unknown type "Int128x"`},
		{"{table: o, columns: [{name: id, type: Int64, on_error: null}]}", "sink.columns[0].on_error", "null needs a Nullable type, and Int64 is not"},
		{"{table: o, columns: [{name: id, type: Int64, colour: red}]}", "sink.columns[0].colour", "unknown field"},
		{"{table: o, create: true}", "sink.create", "is for a typed table: declare columns, or columns: from_table"},
		{"{table: o, columns: from_table, create: true}", "sink.create", "a from_table sink reads an existing table; it creates none"},
		{"{table: o, columns: [{name: id, type: Int64}], on_new_field: grow}", "sink.on_new_field", `must be discard, freeze or evolve, got "grow"`},
		{"{table: o, create: yes please, columns: [{name: id, type: Int64}]}", "sink.create", "must be true or false"},
		{"{table: o, shared: maybe}", "sink.shared", "must be true or false"},
		{"{table: _sluice_owners}", "sink.table", "is sluice's record of which jobs write which tables"},
	} {
		_, err := jobspec.Parse([]byte(head + "sink: " + tt.sink + "\n"))
		var perr *jobspec.Error
		if !errors.As(err, &perr) || len(perr.Problems) != 1 || perr.Problems[0].Path != tt.path || perr.Problems[0].Message != tt.message {
			t.Errorf("%s: %v, want %s: %s", tt.sink, err, tt.path, tt.message)
		}
	}
}

// TestCredentialProblems finds the credentials a spec writes as literals: the planner refuses them
// at submit, while Parse takes them (a schedule stored before the rule still parses).
func TestCredentialProblems(t *testing.T) {
	doc := `name: users
source:
  url: "https://api.example.com/users?sort=id&api_key=abc&Token=x"
  key: id
  headers: {Authorization: "Bearer abc", X-Api-Key: "${SOURCE_KEY}", X-Trace: "literal"}
  pagination: {type: offset}
sink: {table: users}
`
	spec, err := jobspec.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse refused literal credentials: %v", err)
	}
	got := spec.CredentialProblems()
	want := []jobspec.Problem{
		{Path: "source.headers.Authorization", Message: "is a credential: its value must come from a secret reference (${SOURCE_…} or ${file:…}), or use source.auth; a literal travels in every task"},
		{Path: "source.url", Message: `must not carry the credential "Token" in its query: the URL travels in every task; use source.auth (type api_key, in: query) with a secret reference`},
		{Path: "source.url", Message: `must not carry the credential "api_key" in its query: the URL travels in every task; use source.auth (type api_key, in: query) with a secret reference`},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("problems:\n got %q\nwant %q", got, want)
	}
}
