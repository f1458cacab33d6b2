package jobspec_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/jobspec"
)

func TestZZSlowCorpus(t *testing.T) {
	dir := os.Getenv("CORPUS")
	if dir == "" {
		t.Skip()
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		lines := string(b)
		// format: go test fuzz v1\n[]byte("...")\n
		i := len("go test fuzz v1\n[]byte(")
		s, err := strconv.Unquote(lines[i : len(lines)-2])
		if err != nil {
			t.Logf("%s: %v", f, err)
			continue
		}
		start := time.Now()
		jobspec.Parse([]byte(s))
		if d := time.Since(start); d > 50*time.Millisecond {
			t.Logf("%s: %v len %d", f, d, len(s))
		}
	}
}
