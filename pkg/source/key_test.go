package source

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestRecordKey(t *testing.T) {
	tests := []struct {
		record, path, key, reason string
	}{
		{`{"id":42,"name":"x"}`, "id", "42", ""},
		{` { "name" : "x" , "id" : "abc" } `, "id", "abc", ""},
		{`{"id":-7}`, "id", "-7", ""},
		{`{"a":{"b":{"id":"deep"}},"id":1}`, "a.b.id", "deep", ""},
		{`{"skip":[1,{"id":2},"}"],"id":"after"}`, "id", "after", ""},
		{`{"id":"caf\u00e9 \"q\""}`, "id", `café "q"`, ""},
		{`{"\u0069d":5}`, "id", "5", ""},
		{`{"name":"no id"}`, "id", "", `key field "id" is missing`},
		{`{}`, "id", "", `key field "id" is missing`},
		{`{"a":{"c":1}}`, "a.b", "", `key field "a.b" is missing`},
		{`{"id":{"bad":true}}`, "id", "", `key field "id" is not a string or an integer`},
		{`{"id":1.5}`, "id", "", `key field "id" is not a string or an integer`},
		{`{"id":null}`, "id", "", `key field "id" is not a string or an integer`},
		{`{"id":""}`, "id", "", `key field "id" is an empty string`},
		{`[1,2]`, "id", "", "record is not a JSON object"},
		{`{"id":`, "id", "", "record is not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.record, func(t *testing.T) {
			key, reason := RecordKey([]byte(tt.record), tt.path)
			if key != tt.key || reason != tt.reason {
				t.Fatalf("RecordKey(%s, %s) = %q, %q; want %q, %q", tt.record, tt.path, key, reason, tt.key, tt.reason)
			}
		})
	}
}

// referenceKey is the obvious implementation RecordKey must agree with on valid JSON.
func referenceKey(record []byte, path string) (string, bool) {
	var v any
	dec := json.NewDecoder(strings.NewReader(string(record)))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return "", false
	}
	for _, seg := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return "", false
		}
		if v, ok = m[seg]; !ok {
			return "", false
		}
	}
	switch k := v.(type) {
	case string:
		return k, k != ""
	case json.Number:
		return string(k), isInteger([]byte(k))
	}
	return "", false
}

// FuzzRecordKey checks RecordKey against decoding the whole record, for valid JSON objects with
// unique member names (duplicates are resolved differently, and the loader rejects nothing for it).
func FuzzRecordKey(f *testing.F) {
	for _, s := range []string{`{"id":1}`, `{"a":{"id":"x"},"id":"y"}`, `{"id":"\u00e9"}`, `{"x":[{"id":1}],"id":-3}`, `{"id":12345678901}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, record []byte) {
		var m map[string]json.RawMessage
		if json.Unmarshal(record, &m) != nil || hasDuplicateKeys(record) {
			return
		}
		key, reason := RecordKey(record, "id")
		want, ok := referenceKey(record, "id")
		if ok && (key != want || reason != "") {
			t.Fatalf("RecordKey(%s) = %q, %q; the decoded record says %q", record, key, reason, want)
		}
		if !ok && key != "" {
			t.Fatalf("RecordKey(%s) = %q, but the decoded record has no usable key", record, key)
		}
	})
}

func hasDuplicateKeys(record []byte) bool {
	dec := json.NewDecoder(strings.NewReader(string(record)))
	seen := map[string]bool{}
	depth := 0
	expectKey := false
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' || v == '[' {
				depth++
			} else {
				depth--
			}
			expectKey = v == '{' && depth == 1
		case string:
			if depth == 1 && expectKey {
				if seen[v] {
					return true
				}
				seen[v] = true
			}
		}
		if depth == 1 {
			expectKey = dec.More() && !expectKey
		}
	}
}

func BenchmarkRecordKey(b *testing.B) {
	rec := []byte(`{"id":123456,"name":"user-123456","email":"user-123456@example.com","created_at":"2024-01-01T00:00:00Z","pad":"` + strings.Repeat("x", 180) + `"}`)
	b.SetBytes(int64(len(rec)))
	for b.Loop() {
		if k, _ := RecordKey(rec, "id"); k != "123456" {
			b.Fatal(k)
		}
	}
}
