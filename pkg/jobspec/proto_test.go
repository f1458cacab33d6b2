package jobspec_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicedata/sluice/pkg/jobspec"
)

func TestSourceProtoRoundTrip(t *testing.T) {
	page := minimalSpec()
	page.Source.Pagination.Type = "page"
	page.Source.Pagination.PageParam = "p"
	page.Source.Pagination.PageSize = 100000
	page.Source.MaxRetries = 0
	page.Source.Timeout = 1500 * time.Millisecond

	full := exampleSpec()
	full.Source.MaxRecords = 10
	full.Source.RateLimit = 5.5
	full.Source.Pagination.FirstPage = 7

	tests := []struct {
		name string
		spec jobspec.Spec
	}{
		{name: "example", spec: exampleSpec()},
		{name: "page pagination", spec: page},
		{name: "every field", spec: full},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wire, err := proto.Marshal(tc.spec.SourceProto())
			if err != nil {
				t.Fatal(err)
			}
			var p sluicev1.Source
			if err := proto.Unmarshal(wire, &p); err != nil {
				t.Fatal(err)
			}
			got, err := jobspec.SourceFromProto(&p)
			if err != nil {
				t.Fatalf("SourceFromProto: %v", err)
			}
			want := tc.spec.Source
			if !reflect.DeepEqual(got, want) {
				t.Errorf("SourceFromProto:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestSourceProtoKeepsReferences(t *testing.T) {
	s := exampleSpec()
	got := s.SourceProto().GetHttp()
	if h := got.GetHeaders()["Authorization"]; h != "Bearer ${SOURCE_TOKEN}" {
		t.Errorf("Authorization = %q, want the unexpanded reference", h)
	}
	if d := got.GetTimeout().AsDuration(); d != 30*time.Second {
		t.Errorf("timeout = %v, want 30s", d)
	}
	if ty := got.GetPagination().GetType(); ty != sluicev1.Pagination_TYPE_OFFSET {
		t.Errorf("pagination type = %v, want TYPE_OFFSET", ty)
	}
}

func TestSourceFromProtoUnsupported(t *testing.T) {
	tests := []struct {
		name   string
		source *sluicev1.Source
	}{
		{name: "nil", source: nil},
		{name: "no kind", source: &sluicev1.Source{}},
		{name: "nil http", source: &sluicev1.Source{Kind: &sluicev1.Source_Http{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := jobspec.SourceFromProto(tc.source)
			if !errors.Is(err, jobspec.ErrUnsupportedSource) {
				t.Errorf("error = %v, want ErrUnsupportedSource", err)
			}
		})
	}
}

func TestSourceFromProtoErrors(t *testing.T) {
	http := func(h *sluicev1.HttpSource) *sluicev1.Source {
		return &sluicev1.Source{Kind: &sluicev1.Source_Http{Http: h}}
	}
	offset := &sluicev1.Pagination{Type: sluicev1.Pagination_TYPE_OFFSET}
	tests := []struct {
		name   string
		source *sluicev1.Source
		prefix string
	}{
		{
			name:   "unspecified pagination",
			source: http(&sluicev1.HttpSource{Pagination: &sluicev1.Pagination{}}),
			prefix: "source from proto: unknown pagination type TYPE_UNSPECIFIED",
		},
		{
			name:   "unknown pagination",
			source: http(&sluicev1.HttpSource{Pagination: &sluicev1.Pagination{Type: 9}}),
			prefix: "source from proto: unknown pagination type 9",
		},
		{
			name:   "invalid timeout",
			source: http(&sluicev1.HttpSource{Pagination: offset, Timeout: &durationpb.Duration{Seconds: 1, Nanos: -1}}),
			prefix: "source from proto: timeout: ",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := jobspec.SourceFromProto(tc.source)
			if err == nil || !strings.HasPrefix(err.Error(), tc.prefix) {
				t.Errorf("error = %v, want one starting %q", err, tc.prefix)
			}
		})
	}
}
