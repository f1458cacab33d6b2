package demosource_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicedata/sluice/pkg/demosource"
)

// TestPaginationCoversEveryRecordOnce pages through the source both ways and expects records
// [0, N), in order, byte for byte as Record and MalformedRecord give them.
func TestPaginationCoversEveryRecordOnce(t *testing.T) {
	tests := []struct {
		name    string
		records int64
		limit   int64
		query   func(n, limit int64) string // the query of the n-th request, from 0
	}{
		{"offset", 1000, 100, offsetQuery},
		{"offset, last page partial", 1003, 100, offsetQuery},
		{"offset, one record a page", 37, 1, offsetQuery},
		{"offset, one page for all", 250, 10000, offsetQuery},
		{"page", 1000, 100, pageQuery},
		{"page, last page partial", 999, 7, pageQuery},
		{"no records", 0, 10, pageQuery},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(tt.records)
			cfg.MalformedEvery = 10
			h := newServer(t, cfg).Handler()
			pages := (tt.records + tt.limit - 1) / tt.limit
			var records []json.RawMessage
			var meta []int64
			for n := range pages {
				p := decodePage(t, serve(h, "/api/users?"+tt.query(n, tt.limit)))
				records = append(records, p.Data...)
				meta = append(meta, p.Offset, p.Limit, p.Total)
			}
			want := make([]json.RawMessage, tt.records)
			for i := range tt.records {
				want[i] = expected(cfg, i)
			}
			if !slices.EqualFunc(records, want, func(a, b json.RawMessage) bool { return bytes.Equal(a, b) }) {
				t.Fatalf("got %d records, want %d, or their bytes differ", len(records), len(want))
			}
			wantMeta := make([]int64, 0, 3*pages)
			for n := range pages {
				wantMeta = append(wantMeta, n*tt.limit, tt.limit, tt.records)
			}
			if !slices.Equal(meta, wantMeta) {
				t.Errorf("offset, limit, total of the pages = %v, want %v", meta, wantMeta)
			}
			past := decodePage(t, serve(h, "/api/users?"+tt.query(pages, tt.limit)))
			if len(past.Data) != 0 || past.Total != tt.records {
				t.Errorf("page past the end has %d records, total %d", len(past.Data), past.Total)
			}
		})
	}
}

func offsetQuery(n, limit int64) string { return fmt.Sprintf("offset=%d&limit=%d", n*limit, limit) }
func pageQuery(n, limit int64) string   { return fmt.Sprintf("page=%d&limit=%d", n+1, limit) }

func TestPageResponse(t *testing.T) {
	cfg := testConfig(10)
	h := newServer(t, cfg).Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/anything?offset=8&limit=5", nil))
	want := `{"data":[` + string(demosource.Record(8, cfg.RecordSize)) + "," +
		string(demosource.Record(9, cfg.RecordSize)) + `],"total":10,"offset":8,"limit":5}`
	if rec.Code != http.StatusOK || rec.Body.String() != want {
		t.Fatalf("%d %s\nwant %s", rec.Code, rec.Body, want)
	}
	if ct, cl := rec.Header().Get("Content-Type"), rec.Header().Get("Content-Length"); ct != "application/json" || cl != fmt.Sprint(len(want)) {
		t.Errorf("Content-Type %q Content-Length %q", ct, cl)
	}
}

func TestBadParameters(t *testing.T) {
	tests := []struct {
		query string
		want  string
	}{
		{"", "limit is required"},
		{"offset=0", "limit is required"},
		{"offset=0&limit=0", "limit must be between 1 and 500, got 0"},
		{"offset=0&limit=501", "limit must be between 1 and 500, got 501"},
		{"offset=0&limit=ten", `limit must be an integer, got "ten"`},
		{"limit=10", "offset or page is required"},
		{"offset=0&page=1&limit=10", "give offset or page, not both"},
		{"offset=-1&limit=10", "offset must be between 0 and"},
		{"offset=1e3&limit=10", "offset must be an integer"},
		{"page=0&limit=10", "page must be between 1 and"},
		{"page=-3&limit=10", "page must be between 1 and"},
		{"page=9223372036854775807&limit=10", "page must be between 1 and"},
		{"page=&limit=10", "page is required"},
	}
	cfg := testConfig(100)
	cfg.MaxLimit = 500
	srv := newServer(t, cfg)
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			res := serve(srv.Handler(), "/api/users?"+tt.query)
			var body struct{ Error string }
			if err := json.Unmarshal(res.body, &body); err != nil {
				t.Fatalf("body %q: %v", res.body, err)
			}
			if res.status != http.StatusBadRequest || !strings.Contains(body.Error, tt.want) {
				t.Fatalf("%d %q, want 400 with %q", res.status, body.Error, tt.want)
			}
		})
	}
	if got := srv.Stats(); got.Requests != int64(len(tests)) || got.ByStatus["400"] != int64(len(tests)) {
		t.Errorf("stats %+v, want %d requests answered 400", got, len(tests))
	}
}

// TestStatsEndpoint checks that GET /stats serves Stats and that POST /stats/reset zeroes it.
func TestStatsEndpoint(t *testing.T) {
	cfg := testConfig(250)
	cfg.Rate429 = 0.5
	srv := newServer(t, cfg)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	for _, q := range []string{"offset=0&limit=100", "offset=100&limit=100", "offset=200&limit=100", "page=9&limit=100", "limit=1"} {
		resp, err := http.Get(ts.URL + "/api/users?" + q)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	served := srv.Stats()
	if served.Requests != 5 || served.ByStatus["400"] != 1 || served.ByStatus["200"]+served.ByStatus["429"] != 4 ||
		served.PagesServed != served.ByStatus["200"] || served.RecordsServed == 0 {
		t.Fatalf("stats after five requests: %+v", served)
	}

	tests := []struct {
		name   string
		method string
		path   string
		status int
		want   demosource.Stats
	}{
		{"get", http.MethodGet, "/stats", http.StatusOK, served},
		{"reset", http.MethodPost, "/stats/reset", http.StatusNoContent, demosource.Stats{}},
		{"get after reset", http.MethodGet, "/stats", http.StatusOK, demosource.Stats{ByStatus: map[string]int64{}}},
		{"healthz", http.MethodGet, "/healthz", http.StatusOK, demosource.Stats{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, ts.URL+tt.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got demosource.Stats
			_ = json.NewDecoder(resp.Body).Decode(&got)
			if resp.StatusCode != tt.status || fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("%s %s = %d %+v, want %d %+v", tt.method, tt.path, resp.StatusCode, got, tt.status, tt.want)
			}
		})
	}
	if got := srv.Stats(); got.Requests != 0 || len(got.ByStatus) != 0 {
		t.Errorf("Stats after reset = %+v", got)
	}
}

func TestStatsJSONNames(t *testing.T) {
	js, err := json.Marshal(demosource.Stats{ByStatus: map[string]int64{"200": 1}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"requests":0,"by_status":{"200":1},"early_requests":0,"pages_served":0,"records_served":0,"pages_served_again":0,"truncated":0,"slow":0,"tokens_issued":0,"unauthorized":0}`
	if string(js) != want {
		t.Fatalf("%s, want %s", js, want)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := testConfig(150)
	h := newServer(t, cfg, demosource.WithRegisterer(reg)).Handler()
	for _, q := range []string{"offset=0&limit=100", "offset=100&limit=100", "offset=200&limit=100", "limit=0"} {
		serve(h, "/api/users?"+q)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			got[name] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"demosource_records_served_total":       150,
		"demosource_requests_total{status=200}": 3,
		"demosource_requests_total{status=400}": 1,
		"demosource_requests_total{status=429}": 0,
		"demosource_requests_total{status=500}": 0,
		"demosource_requests_total{status=502}": 0,
		"demosource_requests_total{status=503}": 0,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("metrics %v, want %v", got, want)
	}
}
