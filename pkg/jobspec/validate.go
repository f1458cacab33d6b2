package jobspec

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicedata/sluice/pkg/chsink"
)

var (
	nameRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	tableRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]{0,205}$`)
)

// Limits that Validate enforces.
const (
	minTimeout  = time.Millisecond
	maxTimeout  = 10 * time.Minute
	maxRetries  = 100
	maxPageSize = 100000
	maxTasks    = MaxTasks
	// maxConcurrency bounds a job's cap on the tasks one extractor member works on at once.
	maxConcurrency = 1024
	// MaxRecords bounds a job's extent, so that planning arithmetic never overflows.
	MaxRecords = 1_000_000_000_000
	// MaxPages bounds a crawl's max_pages: a crawl is one page after another, each a task, and one
	// of ten million pages would take weeks; a crawl's task ids hold its page in eight digits.
	MaxPages = 10_000_000
	// minRateLimit is the slowest rate limit taken: slower ones hold extractor slots for minutes
	// per request.
	minRateLimit = 0.1
)

// ValidName reports whether name may name a job: what the job's mark and schedule are kept under.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Validate checks the spec as it is, without applying defaults. It returns a *Error with every
// problem, each with the path of its field as the document names it, or nil.
func (s *Spec) Validate() error {
	var p problems
	s.validate(&p)
	return p.err()
}

func (s *Spec) validate(p *problems) {
	switch {
	case s.Name == "":
		p.add("name", "required")
	case !nameRE.MatchString(s.Name):
		p.add("name", "must be 1 to 63 lower-case letters, digits, '_' or '-', starting with a letter or digit")
	}
	s.Source.validate(p)
	switch {
	case s.Tasks < 1 || s.Tasks > maxTasks:
		p.add("tasks", fmt.Sprintf("must be between 1 and %d", maxTasks))
	case s.Tasks > 1 && s.Source.Slices.Type != "":
		p.add("tasks", "must be 1: the slices make the tasks")
	case s.Tasks > 1 && s.Source.Pagination.Crawl():
		p.add("tasks", "must be 1: a "+s.Source.Pagination.Type+" crawl reads one page after another")
	}
	if s.Source.Slices.Type != "" && s.Source.Pagination.TotalPath != "" {
		p.add("source.pagination.total_path", "a sliced job reads each slice to its end: leave it out")
	}
	s.validateIncremental(p)
	if s.Schedule != (Schedule{}) {
		if every, err := time.ParseDuration(s.Schedule.Every); err != nil || every < minEvery {
			p.add("schedule.every", fmt.Sprintf("must be a duration of at least %v, such as 15m", minEvery))
		}
	}
	switch {
	case s.Sink.Table == "":
		p.add("sink.table", "required")
	case !tableRE.MatchString(s.Sink.Table):
		p.add("sink.table", "must be 1 to 206 letters, digits or '_', not starting with a digit")
	case s.Sink.Table == chsink.OwnersTable:
		p.add("sink.table", "is sluice's record of which jobs write which tables")
	default:
		s.Sink.validate(s.Name, p)
	}
	if s.Sink.Cluster != "" && !tableRE.MatchString(s.Sink.Cluster) {
		p.add("sink.cluster", "must be a cluster name of the servers' remote_servers: letters, digits or '_', not starting with a digit")
	}
}

// validate checks a typed sink with the rules the loader applies (chsink.NewSink), and refuses the
// typed fields on the raw landing table.
func (k Sink) validate(name string, p *problems) {
	if !k.Typed() {
		for field, set := range map[string]bool{"create": k.Create, "order_by": len(k.OrderBy) > 0,
			"on_new_field": k.OnNewField != "", "on_error": k.OnError != ""} {
			if set {
				p.add("sink."+field, "is for a typed table: declare columns, or columns: from_table")
			}
		}
		return
	}
	_, probs := chsink.NewSink(k.Schema(name))
	for _, pr := range probs {
		p.add("sink."+pr.Path, pr.Message)
	}
}

func (s *Source) validate(p *problems) {
	switch s.Type {
	case "http":
		s.validateHTTP(p)
	case "postgres":
		s.validatePostgres(p)
	default:
		// Checked as the default kind, so that one run lists the rest of what needs fixing.
		p.add("source.type", `must be "http" or "postgres"`)
		s.validateHTTP(p)
	}
	s.validateCommon(p)
}

// minEvery is the shortest interval a schedule takes.
const minEvery = time.Second

// validateIncremental checks the incremental settings, when there are.
func (s *Spec) validateIncremental(p *problems) {
	in := s.Incremental
	if in == (Incremental{}) {
		return
	}
	const path = "incremental"
	switch {
	case in.CursorField == "":
		p.add(path+".cursor_field", "required")
	case s.Source.Type == "postgres" && !pgColumnRE.MatchString(in.CursorField):
		p.add(path+".cursor_field", "must be a column name: letters, digits, '_' or '$', not starting with a digit")
	case !isDottedPath(in.CursorField):
		p.add(path+".cursor_field", "must be a dotted path of field names, such as updated_at or meta.updated")
	}
	pg := s.Source.Pagination
	switch {
	case s.Source.Type == "postgres" && in.Param != "":
		p.add(path+".param", "is for http sources: a postgres source filters on cursor_field itself")
	case s.Source.Type == "postgres":
	case in.Param == "":
		p.add(path+".param", "required: the query parameter that takes the mark")
	case !isParamName(in.Param):
		p.add(path+".param", "must contain only letters, digits and - . _ ~ [ ]")
	case slices.Contains([]string{pg.OffsetParam, pg.PageParam, pg.LimitParam, pg.CursorParam, s.Source.Slices.ParamFrom, s.Source.Slices.ParamTo}, in.Param) ||
		(s.Source.Auth.In == "query" && s.Source.Auth.Name == in.Param):
		p.add(path+".param", "must differ from the other query parameters of the job")
	}
	if hasControl(in.InitialValue) {
		p.add(path+".initial_value", "must not contain control characters")
	}
	if in.Lookback != "" {
		d, derr := time.ParseDuration(in.Lookback)
		n, nerr := strconv.ParseInt(in.Lookback, 10, 64)
		if (derr != nil || d < 0) && (nerr != nil || n < 0) {
			p.add(path+".lookback", "must be a duration such as 10m (time cursors) or an integer, 0 or more (integer cursors)")
		}
	}
}

// validateCommon checks the fields every kind of source has.
func (s *Source) validateCommon(p *problems) {
	if s.Timeout < minTimeout || s.Timeout > maxTimeout {
		p.add("source.timeout", fmt.Sprintf("must be between %v and %v", minTimeout, maxTimeout))
	}
	if s.MaxRetries < 0 || s.MaxRetries > maxRetries {
		p.add("source.max_retries", fmt.Sprintf("must be between 0 and %d", maxRetries))
	}
	switch {
	case math.IsNaN(s.RateLimit) || math.IsInf(s.RateLimit, 0) || s.RateLimit < 0:
		p.add("source.rate_limit", "must be a finite number, 0 or more")
	case s.RateLimit > 0 && s.RateLimit < minRateLimit:
		p.add("source.rate_limit", fmt.Sprintf("must be 0 (no limit) or at least %v requests per second", minRateLimit))
	}
	if s.Concurrency < 0 || s.Concurrency > maxConcurrency {
		p.add("source.concurrency", fmt.Sprintf("must be between 0 (no cap) and %d", maxConcurrency))
	}
}

var (
	pgTableRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$`)
	pgColumnRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]{0,62}$`)
	pgQueryRE  = regexp.MustCompile(`(?is)^\s*(select|with|values|table)\b`)
)

// maxQuery bounds a postgres source's query.
const maxQuery = 64 << 10

// validatePostgres checks a postgres source: a DSN reference, a table or a query, a key column.
func (s *Source) validatePostgres(p *problems) {
	secretRef(p, "source.dsn", s.DSN, "a connection string holds a password")
	switch {
	case s.Table == "" && s.Query == "":
		p.add("source.table", "required: a table, or a query in source.query")
	case s.Table != "" && s.Query != "":
		p.add("source.query", "leave it out: source.table is set")
	case s.Table != "" && !pgTableRE.MatchString(s.Table):
		p.add("source.table", "must be name or schema.name, each of letters, digits, '_' or '$', not starting with a digit")
	case s.Query != "" && len(s.Query) > maxQuery:
		p.add("source.query", fmt.Sprintf("must be at most %d bytes", maxQuery))
	case s.Query != "" && !pgQueryRE.MatchString(s.Query):
		p.add("source.query", "must be one SELECT (or WITH, VALUES, TABLE) statement")
	case s.Query != "" && strings.HasSuffix(strings.TrimSpace(s.Query), ";"):
		p.add("source.query", "must be one statement without a closing ';': sluice adds its own WHERE, ORDER BY and LIMIT around it")
	}
	switch {
	case s.Key == "":
		p.add("source.key", "required: the column that orders and identifies the rows")
	case !pgColumnRE.MatchString(s.Key):
		p.add("source.key", "must be a column name: letters, digits, '_' or '$', not starting with a digit")
	}
	if s.BatchSize < 1 || s.BatchSize > maxPageSize {
		p.add("source.batch_size", fmt.Sprintf("must be between 1 and %d", maxPageSize))
	}
	for field, set := range map[string]bool{"url": s.URL != "", "records_path": s.RecordsPath != "", "pagination": s.Pagination != (Pagination{}),
		"headers": len(s.Headers) > 0, "max_records": s.MaxRecords != 0, "slices": s.Slices != (Slices{}), "auth": !s.Auth.IsZero()} {
		if set {
			p.add("source."+field, "is for http sources: a postgres source is split by its key")
		}
	}
}

// validateHTTP checks an http source.
func (s *Source) validateHTTP(p *problems) {
	for field, set := range map[string]bool{"dsn": s.DSN != "", "table": s.Table != "", "query": s.Query != "", "batch_size": s.BatchSize != 0} {
		if set {
			p.add("source."+field, "is for postgres sources")
		}
	}
	params := s.Pagination.validate(p)
	params = append(params, s.Slices.validate(p, params)...)
	if s.Auth.Type == "api_key" && s.Auth.In == "query" && s.Auth.Name != "" {
		if slices.Contains(params, s.Auth.Name) {
			p.add("source.auth.name", "must differ from the other query parameters of the job")
		}
		params = append(params, s.Auth.Name)
	}
	if h := s.Auth.header(); h != "" {
		for name := range s.Headers {
			if strings.EqualFold(name, h) {
				p.add("source.headers."+name, "is the header source.auth sets: leave one of them out")
			}
		}
	}
	validateURL(p, s.URL, params)
	switch {
	case s.Key == "":
		p.add("source.key", "required")
	case !isDottedPath(s.Key):
		p.add("source.key", "must be a dotted path of field names, such as id or meta.id")
	}
	if s.RecordsPath != "" && !isDottedPath(s.RecordsPath) {
		p.add("source.records_path", "must be a dotted path of field names, such as data or result.items")
	}
	validateHeaders(p, s.Headers)
	s.Auth.validate(p)
	if s.MaxRecords > MaxRecords {
		p.add("source.max_records", fmt.Sprintf("must be at most %d", uint64(MaxRecords)))
	}
}

// validate checks the pagination and returns the names of the query parameters it sets.
func (pg *Pagination) validate(p *problems) []string {
	const path = "source.pagination"
	var params []string
	check := func(field, name string) {
		switch {
		case name == "":
			p.add(path+"."+field, "required")
		case !isParamName(name):
			p.add(path+"."+field, "must contain only letters, digits and - . _ ~ [ ]")
		default:
			params = append(params, name)
		}
	}
	dotted := func(field, value, example string) {
		if value != "" && !isDottedPath(value) {
			p.add(path+"."+field, "must be a dotted path of field names, such as "+example)
		}
	}
	required := func(field, value, example string) {
		if value == "" {
			p.add(path+"."+field, "required")
		}
		dotted(field, value, example)
	}
	var position string
	switch pg.Type {
	case "offset":
		position = "offset_param"
		check(position, pg.OffsetParam)
	case "page":
		position = "page_param"
		check(position, pg.PageParam)
	case "cursor":
		position = "cursor_param"
		check(position, pg.CursorParam)
		required("cursor_path", pg.CursorPath, "next_cursor or meta.next")
	case "next_url":
		required("next_url_path", pg.NextURLPath, "next or links.next")
	case "link_header":
	default:
		p.add(path+".type", `must be "offset", "page", "cursor", "next_url" or "link_header"`)
	}
	check("limit_param", pg.LimitParam)
	if len(params) == 2 && params[0] == params[1] {
		p.add(path+".limit_param", "must differ from "+position)
	}
	dotted("has_more_path", pg.HasMorePath, "has_more or meta.has_next")
	if pg.MaxPages < 0 || pg.MaxPages > MaxPages {
		p.add(path+".max_pages", fmt.Sprintf("must be between 1 and %d, or 0 (or left out) for the default bound", MaxPages))
	}
	if pg.Crawl() && pg.TotalPath != "" {
		p.add(path+".total_path", "a crawl has no total to split the job by: leave it out")
	}
	if !pg.Crawl() && (pg.CursorParam != "" || pg.CursorPath != "" || pg.NextURLPath != "" || pg.HasMorePath != "" || pg.MaxPages != 0) {
		p.add(path, "cursor_param, cursor_path, next_url_path, has_more_path and max_pages are for cursor, next_url and link_header pagination")
	}
	if pg.PageSize < 1 || pg.PageSize > maxPageSize {
		p.add(path+".page_size", fmt.Sprintf("must be between 1 and %d", maxPageSize))
	}
	if pg.FirstPage < 0 {
		p.add(path+".first_page", "must be 0 or more")
	}
	if pg.TotalPath != "" && !isDottedPath(pg.TotalPath) {
		p.add(path+".total_path", "must be a dotted path of field names, such as total or meta.count")
	}
	return slices.Compact(params)
}

// validateURL checks the source URL. A problem never repeats the URL: it may hold credentials.
func validateURL(p *problems, raw string, params []string) {
	const path = "source.url"
	if raw == "" {
		p.add(path, "required")
		return
	}
	if hasUserinfo(raw) {
		p.add(path, "must not contain a user name or password: pass credentials in headers with ${VAR}")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		// err quotes the URL, so it is not passed on.
		p.add(path, "must be an absolute http or https URL")
		return
	}
	if u.Hostname() == "" {
		p.add(path, "must have a host")
	}
	if strings.Contains(raw, "${") {
		p.add(path, "must not contain ${VAR}: only header values are expanded")
	}
	query, _ := url.ParseQuery(u.RawQuery)
	for _, name := range params {
		if query.Has(name) {
			p.add(path, fmt.Sprintf("must not set the query parameter %q: pagination sets it", name))
		}
	}
}

// hasUserinfo reports whether the authority of a URL holds an '@'. It does not rely on url.Parse,
// which rejects some malformed user information, so that such a URL is still called out.
func hasUserinfo(raw string) bool {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return false
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	return strings.Contains(rest, "@")
}

// validateHeaders checks header names and the ${VAR} references in values. A problem never quotes a
// value.
func validateHeaders(p *problems, headers map[string]string) {
	seen := make(map[string]bool, len(headers))
	for _, name := range slices.Sorted(maps.Keys(headers)) {
		path := "source.headers." + name
		lower := strings.ToLower(name)
		switch {
		case !isToken(name):
			p.add(path, "must be a valid header name (letters, digits and !#$%&'*+-.^_`|~)")
		case seen[lower]:
			p.add(path, "duplicates another header: names are case-insensitive")
		}
		seen[lower] = true
		value := headers[name]
		if hasControl(value) {
			p.add(path, "value must not contain control characters")
		}
		if _, _, err := expand(value, func(string) (string, bool) { return "", true }); err != nil {
			p.add(path, "value has a "+err.Error())
		}
	}
}

// CredentialProblems are the credentials a spec writes as literals, which would travel in every
// task and event: a credential header without a secret reference, a credential in the URL's query.
// The planner refuses them at submit; Parse does not, so that specs stored before the rule (a
// schedule's) still parse.
func (s *Spec) CredentialProblems() []Problem {
	var p problems
	src := s.Source
	for _, name := range slices.Sorted(maps.Keys(src.Headers)) {
		if credentialHeaders[strings.ToLower(name)] && !strings.Contains(src.Headers[name], "${") {
			p.add("source.headers."+name, "is a credential: its value must come from a secret reference (${SOURCE_…} or ${file:…}), or use source.auth; a literal travels in every task")
		}
	}
	if u, err := url.Parse(src.URL); err == nil && src.URL != "" {
		query, _ := url.ParseQuery(u.RawQuery)
		for _, name := range slices.Sorted(maps.Keys(query)) {
			if credentialParams[strings.ToLower(name)] {
				p.add("source.url", fmt.Sprintf("must not carry the credential %q in its query: the URL travels in every task; use source.auth (type api_key, in: query) with a secret reference", name))
			}
		}
	}
	return p.list
}

// credentialParams and credentialHeaders are names that carry credentials: their values must come
// from secret references, which the extractor expands, never from the spec, which travels in tasks.
var (
	credentialParams = map[string]bool{"api_key": true, "apikey": true, "api-key": true, "access_token": true,
		"auth_token": true, "token": true, "secret": true, "client_secret": true, "password": true, "passwd": true}
	credentialHeaders = map[string]bool{"authorization": true, "proxy-authorization": true, "x-api-key": true,
		"api-key": true, "apikey": true, "x-auth-token": true, "cookie": true}
)

// isDottedPath reports whether s is field names joined by dots, none of them empty or holding a
// control character.
func isDottedPath(s string) bool {
	return !slices.Contains(strings.Split(s, "."), "") && !hasControl(s)
}

// isParamName reports whether s is a query parameter name that needs no escaping, allowing the
// brackets of JSON:API style names such as page[size].
func isParamName(s string) bool {
	return s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~[]") == ""
}

// isToken reports whether s is an HTTP token (RFC 9110), the syntax of a header name.
func isToken(s string) bool {
	return s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~") == ""
}

// TimeFormats are the ways a time slice writes its bounds.
var TimeFormats = map[string]string{"rfc3339": time.RFC3339, "date": time.DateOnly, "unix": "", "unix_ms": ""}

// validate checks the slices, when there are, and returns their parameters; params are the
// pagination's, which they must not reuse.
func (sl *Slices) validate(p *problems, params []string) []string {
	const path = "source.slices"
	if *sl == (Slices{}) {
		return nil
	}
	var own []string
	for _, f := range []struct{ field, name string }{{"param_from", sl.ParamFrom}, {"param_to", sl.ParamTo}} {
		switch {
		case f.name == "":
			p.add(path+"."+f.field, "required")
		case !isParamName(f.name):
			p.add(path+"."+f.field, "must contain only letters, digits and - . _ ~ [ ]")
		case slices.Contains(params, f.name) || slices.Contains(own, f.name):
			p.add(path+"."+f.field, "must differ from the other query parameters of the job")
		default:
			own = append(own, f.name)
		}
	}
	count, err := sl.Count()
	switch {
	case sl.Type != "time" && sl.Type != "key_range":
		p.add(path+".type", `must be "time" or "key_range"`)
	case err != nil:
		p.add(path, err.Error())
	case count > maxTasks:
		p.add(path, fmt.Sprintf("make %d slices, more than %d: take a longer step", count, maxTasks))
	}
	if sl.Type == "time" {
		if _, ok := TimeFormats[sl.Format]; !ok && sl.Format != "" {
			p.add(path+".format", `must be "rfc3339", "date", "unix" or "unix_ms"`)
		}
	} else if sl.Format != "" {
		p.add(path+".format", "is for time slices")
	}
	return own
}

func midnight(t time.Time) bool { return t.Equal(t.UTC().Truncate(24 * time.Hour)) }

// Count is how many windows the slices make, or why they make none.
func (sl Slices) Count() (int64, error) {
	switch sl.Type {
	case "time":
		start, err1 := time.Parse(time.RFC3339, sl.Start)
		end, err2 := time.Parse(time.RFC3339, sl.End)
		step, err3 := time.ParseDuration(sl.Step)
		switch {
		case err1 != nil || err2 != nil:
			return 0, errors.New("start and end must be RFC 3339 times, such as 2024-01-01T00:00:00Z")
		case err3 != nil || step < time.Second:
			return 0, errors.New("step must be a duration of at least 1s, such as 24h")
		case !start.Before(end):
			return 0, errors.New("start must be before end")
		case sl.Format == "date" && (step%(24*time.Hour) != 0 || !midnight(start) || !midnight(end)):
			return 0, errors.New("date bounds need whole days: a step of a multiple of 24h, start and end at midnight UTC")
		}
		// In seconds, as uint64: a span of more than 292 years overflows a Duration.
		span, secs := uint64(end.Unix()-start.Unix()), uint64(step/time.Second)
		return int64(min((span+secs-1)/secs, math.MaxInt32)), nil
	case "key_range":
		start, err1 := strconv.ParseInt(sl.Start, 10, 64)
		end, err2 := strconv.ParseInt(sl.End, 10, 64)
		step, err3 := strconv.ParseInt(sl.Step, 10, 64)
		switch {
		case err1 != nil || err2 != nil:
			return 0, errors.New("start and end must be integers")
		case err3 != nil || step < 1:
			return 0, errors.New("step must be a positive integer")
		case start >= end:
			return 0, errors.New("start must be below end")
		}
		// The distance as uint64 (int64 cannot hold it across zero), divided without a rounding
		// sum that could wrap: a range across the whole of int64 is 2^64-1 keys, not 0 windows.
		span := uint64(end) - uint64(start)
		n := span / uint64(step)
		if span%uint64(step) != 0 {
			n++
		}
		return int64(min(n, math.MaxInt32)), nil
	}
	return 0, errors.New("unknown type")
}

// header is the request header the credentials set, "" when none.
func (a *Auth) header() string {
	switch a.Type {
	case "basic", "oauth2_client_credentials":
		return "Authorization"
	case "api_key":
		if a.In != "query" {
			return a.Name
		}
	}
	return ""
}

// validate checks the credentials, when there are. A secret must be one reference and nothing
// else: a literal secret would travel in the spec, the tasks and the events.
func (a *Auth) validate(p *problems) {
	const path = "source.auth"
	if a.IsZero() {
		return
	}
	secret := func(field, value string) {
		secretRef(p, path+"."+field, value, "a secret is never written in the spec")
	}
	plain := func(field, value string) {
		if value == "" {
			p.add(path+"."+field, "required")
		} else if _, _, err := expand(value, func(string) (string, bool) { return "", true }); err != nil {
			p.add(path+"."+field, "has a "+err.Error())
		}
	}
	unused := func(fields ...string) {
		values := map[string]bool{"in": a.In != "", "name": a.Name != "", "value": a.Value != "", "username": a.Username != "",
			"password": a.Password != "", "token_url": a.TokenURL != "", "client_id": a.ClientID != "",
			"client_secret": a.ClientSecret != "", "scopes": len(a.Scopes) > 0}
		for _, f := range fields {
			if values[f] {
				p.add(path+"."+f, "is not used by auth type "+a.Type)
			}
		}
	}
	switch a.Type {
	case "api_key":
		if a.In != "" && a.In != "header" && a.In != "query" {
			p.add(path+".in", `must be "header" or "query"`)
		}
		switch {
		case a.Name == "":
			p.add(path+".name", "required")
		case a.In == "query" && !isParamName(a.Name):
			p.add(path+".name", "must contain only letters, digits and - . _ ~ [ ]")
		case a.In != "query" && !isToken(a.Name):
			p.add(path+".name", "must be a valid header name")
		}
		secret("value", a.Value)
		unused("username", "password", "token_url", "client_id", "client_secret", "scopes")
	case "basic":
		plain("username", a.Username)
		secret("password", a.Password)
		unused("in", "name", "value", "token_url", "client_id", "client_secret", "scopes")
	case "oauth2_client_credentials":
		if u, err := url.Parse(a.TokenURL); a.TokenURL == "" {
			p.add(path+".token_url", "required")
		} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || hasUserinfo(a.TokenURL) {
			p.add(path+".token_url", "must be an absolute http or https URL without credentials")
		} else if u.Scheme == "http" && !loopback(u.Hostname()) {
			p.add(path+".token_url", "must be https: the client secret is sent to it (http only to a loopback address)")
		}
		plain("client_id", a.ClientID)
		secret("client_secret", a.ClientSecret)
		for i, sc := range a.Scopes {
			if sc == "" || strings.ContainsAny(sc, " \"\\") || hasControl(sc) {
				p.add(fmt.Sprintf("%s.scopes[%d]", path, i), "must be a scope token without spaces or quotes")
			}
		}
		unused("in", "name", "value", "username", "password")
	default:
		p.add(path+".type", `must be "api_key", "basic" or "oauth2_client_credentials"`)
	}
}

// secretRef checks that value at path is one reference, ${SOURCE_…} or ${file:/path}, and nothing
// else; why says why it must be.
func secretRef(p *problems, path, value, why string) {
	name, ok := strings.CutPrefix(value, "${")
	name, closed := strings.CutSuffix(name, "}")
	switch {
	case value == "":
		p.add(path, "required")
	case !ok || !closed || strings.ContainsAny(name, "${}") || (!isVarName(name) && !isFileRef(name)):
		p.add(path, "must be one reference, ${SOURCE_…} or ${file:/path}: "+why)
	default:
		if _, _, err := expand(value, func(string) (string, bool) { return "", true }); err != nil {
			p.add(path, "has a "+err.Error())
		}
	}
}

// loopback reports whether host is this machine: localhost or a loopback address.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
