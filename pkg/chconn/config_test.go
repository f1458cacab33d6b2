package chconn

import "testing"

// TestMethod resolves auto to none only when every server is on loopback.
func TestMethod(t *testing.T) {
	for _, c := range []struct {
		compression string
		addr        []string
		want        string
	}{
		{"auto", []string{"127.0.0.1:9000"}, "none"},
		{"auto", []string{"127.0.0.2:9000", "[::1]:9000", "localhost:9000"}, "none"},
		{"auto", []string{"127.0.0.1:9000", "clickhouse:9000"}, "lz4"},
		{"auto", []string{"10.0.0.5:9000"}, "lz4"},
		{"auto", []string{"localhost.example.com:9000"}, "lz4"},
		{"zstd", []string{"127.0.0.1:9000"}, "zstd"},
		{"none", []string{"clickhouse:9000"}, "none"},
	} {
		cfg := Config{Compression: c.compression, Addr: c.addr}
		if got := cfg.Method(); got != c.want {
			t.Errorf("%s for %v = %s, want %s", c.compression, c.addr, got, c.want)
		}
	}
}
