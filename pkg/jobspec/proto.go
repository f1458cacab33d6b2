package jobspec

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// SourceProto returns the source as it travels in a Task. Header values keep their ${VAR} references:
// the extractor expands them from its own environment. Call it on a valid spec; a negative count
// becomes 0.
func (s *Spec) SourceProto() *sluicev1.Source {
	p := s.sourceProto()
	if in := s.Incremental; in != (Incremental{}) {
		p.Incremental = &sluicev1.Incremental{CursorField: in.CursorField, Param: in.Param}
	}
	return p
}

func (s *Spec) sourceProto() *sluicev1.Source {
	src := s.Source
	if src.Type == "postgres" {
		return &sluicev1.Source{Kind: &sluicev1.Source_Postgres{Postgres: &sluicev1.PostgresSource{
			Dsn:         src.DSN,
			Table:       src.Table,
			Query:       src.Query,
			Key:         src.Key,
			BatchSize:   toUint32(src.BatchSize),
			Timeout:     durationpb.New(src.Timeout),
			MaxRetries:  toUint32(src.MaxRetries),
			RateLimit:   src.RateLimit,
			Concurrency: toUint32(src.Concurrency),
		}}}
	}
	pagination := &sluicev1.Pagination{
		OffsetParam: src.Pagination.OffsetParam,
		PageParam:   src.Pagination.PageParam,
		LimitParam:  src.Pagination.LimitParam,
		PageSize:    toUint32(src.Pagination.PageSize),
		TotalPath:   src.Pagination.TotalPath,
		FirstPage:   toUint32(src.Pagination.FirstPage),
		CursorParam: src.Pagination.CursorParam,
		CursorPath:  src.Pagination.CursorPath,
		NextUrlPath: src.Pagination.NextURLPath,
		HasMorePath: src.Pagination.HasMorePath,
		MaxPages:    uint64(max(src.Pagination.MaxPages, 0)),
	}
	for kind, t := range paginationTypes {
		if kind == src.Pagination.Type {
			pagination.Type = t
		}
	}
	return &sluicev1.Source{Kind: &sluicev1.Source_Http{Http: &sluicev1.HttpSource{
		Url:         src.URL,
		RecordsPath: src.RecordsPath,
		Key:         src.Key,
		Pagination:  pagination,
		Headers:     maps.Clone(src.Headers),
		Timeout:     durationpb.New(src.Timeout),
		MaxRetries:  toUint32(src.MaxRetries),
		RateLimit:   src.RateLimit,
		MaxRecords:  src.MaxRecords,
		Concurrency: toUint32(src.Concurrency),
		Slices:      slicesProto(src.Slices),
		Auth:        authProto(src.Auth),
	}}}
}

var authTypes = map[string]sluicev1.Auth_Type{"api_key": sluicev1.Auth_TYPE_API_KEY, "basic": sluicev1.Auth_TYPE_BASIC,
	"oauth2_client_credentials": sluicev1.Auth_TYPE_OAUTH2_CLIENT_CREDENTIALS}

func authProto(a Auth) *sluicev1.Auth {
	if a.IsZero() {
		return nil
	}
	return &sluicev1.Auth{Type: authTypes[a.Type], InQuery: a.In == "query", Name: a.Name, Value: a.Value,
		Username: a.Username, Password: a.Password, TokenUrl: a.TokenURL, ClientId: a.ClientID,
		ClientSecret: a.ClientSecret, Scopes: slices.Clone(a.Scopes)}
}

func authFromProto(p *sluicev1.Auth) Auth {
	if p == nil {
		return Auth{}
	}
	a := Auth{Name: p.Name, Value: p.Value, Username: p.Username, Password: p.Password, TokenURL: p.TokenUrl,
		ClientID: p.ClientId, ClientSecret: p.ClientSecret, Scopes: slices.Clone(p.Scopes)}
	for name, t := range authTypes {
		if t == p.Type {
			a.Type = name
		}
	}
	if p.InQuery {
		a.In = "query"
	} else if a.Type == "api_key" {
		a.In = "header"
	}
	return a
}

func slicesProto(sl Slices) *sluicev1.Slices {
	if sl == (Slices{}) {
		return nil
	}
	t := sluicev1.Slices_TYPE_UNSPECIFIED
	switch sl.Type {
	case "time":
		t = sluicev1.Slices_TYPE_TIME
	case "key_range":
		t = sluicev1.Slices_TYPE_KEY_RANGE
	}
	return &sluicev1.Slices{Type: t, ParamFrom: sl.ParamFrom, ParamTo: sl.ParamTo, Start: sl.Start, End: sl.End,
		Step: sl.Step, Format: sl.Format}
}

func slicesFromProto(p *sluicev1.Slices) Slices {
	if p == nil {
		return Slices{}
	}
	kind := map[sluicev1.Slices_Type]string{sluicev1.Slices_TYPE_TIME: "time", sluicev1.Slices_TYPE_KEY_RANGE: "key_range"}[p.Type]
	return Slices{Type: kind, ParamFrom: p.ParamFrom, ParamTo: p.ParamTo, Start: p.Start, End: p.End, Step: p.Step, Format: p.Format}
}

// SourceFromProto is the inverse of Spec.SourceProto. It returns an error wrapping
// ErrUnsupportedSource when the source is not http, and an error for an unknown pagination type or
// an invalid timeout. It does not validate.
func SourceFromProto(p *sluicev1.Source) (Source, error) {
	if pg := p.GetPostgres(); pg != nil {
		timeout, err := durationOf(pg.GetTimeout())
		if err != nil {
			return Source{}, err
		}
		return Source{Type: "postgres", DSN: pg.GetDsn(), Table: pg.GetTable(), Query: pg.GetQuery(), Key: pg.GetKey(),
			BatchSize: int(pg.GetBatchSize()), Timeout: timeout, MaxRetries: int(pg.GetMaxRetries()),
			RateLimit: pg.GetRateLimit(), Concurrency: int(pg.GetConcurrency())}, nil
	}
	h := p.GetHttp()
	if h == nil {
		return Source{}, fmt.Errorf("source from proto: %w", ErrUnsupportedSource)
	}
	kind := ""
	for name, t := range paginationTypes {
		if t == h.GetPagination().GetType() {
			kind = name
		}
	}
	if kind == "" {
		return Source{}, fmt.Errorf("source from proto: unknown pagination type %v", h.GetPagination().GetType())
	}
	timeout, err := durationOf(h.GetTimeout())
	if err != nil {
		return Source{}, err
	}
	var headers map[string]string
	if len(h.GetHeaders()) > 0 {
		headers = maps.Clone(h.GetHeaders())
	}
	pg := h.GetPagination()
	return Source{
		Type:        "http",
		URL:         h.GetUrl(),
		RecordsPath: h.GetRecordsPath(),
		Key:         h.GetKey(),
		Pagination: Pagination{
			Type:        kind,
			OffsetParam: pg.GetOffsetParam(),
			PageParam:   pg.GetPageParam(),
			LimitParam:  pg.GetLimitParam(),
			PageSize:    int(pg.GetPageSize()),
			TotalPath:   pg.GetTotalPath(),
			FirstPage:   int(pg.GetFirstPage()),
			CursorParam: pg.GetCursorParam(),
			CursorPath:  pg.GetCursorPath(),
			NextURLPath: pg.GetNextUrlPath(),
			HasMorePath: pg.GetHasMorePath(),
			MaxPages:    int(min(pg.GetMaxPages(), math.MaxInt32)),
		},
		Headers:     headers,
		Timeout:     timeout,
		MaxRetries:  int(h.GetMaxRetries()),
		MaxRecords:  h.GetMaxRecords(),
		RateLimit:   h.GetRateLimit(),
		Concurrency: int(h.GetConcurrency()),
		Slices:      slicesFromProto(h.GetSlices()),
		Auth:        authFromProto(h.GetAuth()),
	}, nil
}

// durationOf is a source's timeout, 0 when it has none.
func durationOf(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, fmt.Errorf("source from proto: timeout: %w", err)
	}
	return d.AsDuration(), nil
}

// paginationTypes are the spec's names of the pagination types.
var paginationTypes = map[string]sluicev1.Pagination_Type{
	"offset": sluicev1.Pagination_TYPE_OFFSET, "page": sluicev1.Pagination_TYPE_PAGE,
	"cursor": sluicev1.Pagination_TYPE_CURSOR, "next_url": sluicev1.Pagination_TYPE_NEXT_URL,
	"link_header": sluicev1.Pagination_TYPE_LINK_HEADER,
}

func toUint32(n int) uint32 {
	return uint32(min(max(int64(n), 0), math.MaxUint32))
}
