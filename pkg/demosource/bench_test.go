package demosource_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// discard is a ResponseWriter that keeps nothing, so that the benchmark measures the server.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(int)             {}

// BenchmarkServePage serves pages of 300-byte records in-process and reports records per second.
func BenchmarkServePage(b *testing.B) {
	for _, limit := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("limit=%d", limit), func(b *testing.B) {
			cfg := testConfig(1_000_000)
			cfg.RecordSize = 300
			cfg.MalformedEvery = 1000
			h := newServer(b, cfg).Handler()
			req := httptest.NewRequest(http.MethodGet, fmt.Sprintf("/api/users?offset=500000&limit=%d", limit), nil)
			w := &discard{h: http.Header{}}
			b.SetBytes(int64(limit * cfg.RecordSize))
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, req)
			}
			b.ReportMetric(float64(b.N*limit)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
