package jobspec_test

import (
	"errors"
	"reflect"
	"runtime"
	"testing"

	"github.com/sluicedata/sluice/pkg/jobspec"
)

// FuzzParse: whatever the document, Parse answers a spec or problems, in memory bounded by the
// decoded size a spec may have (aliases cannot multiply it), and a spec it takes round-trips.
func FuzzParse(f *testing.F) {
	seeds := []string{
		exampleDoc,
		string(func() *jobspec.Spec { s := exampleSpec(); return &s }().JSON()),
		"name: users\nsource: {url: 'http://api.example.com/users', key: id}\nsink: {table: users}\n",
		`{"name": "users", "tasks": 4, "sink": {"table": "users"}, "source": {"url": "https://h/x?a=1",
			"key": "meta.id", "max_retries": 0, "max_records": 1000, "rate_limit": 2.5, "timeout": "1.5s",
			"pagination": {"type": "page", "page_param": "p", "limit_param": "n", "first_page": 0}}}`,
		"name: &n users\nsource: {url: 'http://h/', key: id, headers: {A: '${SOURCE_X}$${SOURCE_Y}$Z'}}\nsink: {table: *n}\n",
		"name: [users\n",
		"- a\n",
		"",
		"name: a\n---\nname: b\n",
		"source: {rate_limit: .nan, timeout: -1s, max_records: -1}\n",
		"name: x\nsink: {table: t, columns: [&a {name: &n nnnnnnnnnnnnnnnn, type: Int64}, *a, *a, *a, *a]}\nx: &b [*n, *n, *n]\ny: [*b, *b, *b]\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		spec, err := jobspec.Parse(data)
		runtime.ReadMemStats(&after)
		// The decoded document is at most 1 MiB; its decoding and validation a small multiple of it.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20+uint64(len(data))*64 {
			t.Fatalf("Parse of %d bytes allocated %d MiB", len(data), alloc>>20)
		}
		if err != nil {
			var e *jobspec.Error
			if !errors.As(err, &e) || len(e.Problems) == 0 {
				t.Fatalf("Parse error %v (%T) is not a *Error with problems", err, err)
			}
			return
		}
		if err := spec.Validate(); err != nil {
			t.Fatalf("Validate after a successful Parse: %v", err)
		}
		again, err := jobspec.Parse(spec.JSON())
		if err != nil {
			t.Fatalf("Parse(JSON()): %v\n%s", err, spec.JSON())
		}
		if !reflect.DeepEqual(again, spec) {
			t.Fatalf("Parse(JSON()) = %+v, want %+v", again, spec)
		}
	})
}
