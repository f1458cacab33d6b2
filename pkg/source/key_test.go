package source

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"
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
		// Lone surrogates keep their escape; a text that spells one has its backslash doubled.
		{`{"id":"\ud800"}`, "id", `\ud800`, ""},
		{`{"id":"\uDBFF!"}`, "id", `\udbff!`, ""},
		{`{"id":"\\ud800"}`, "id", `\\ud800`, ""},
		{`{"id":"\ud83d\ude00 \u00e9"}`, "id", "😀 é", ""},
		{`{"id":"\ude00\ud83d"}`, "id", `\ude00\ud83d`, ""},
		{`{"id":"a\\b \\u0041 \\uD800 \\ud8"}`, "id", `a\b \u0041 \uD800 \ud8`, ""},
		{`{"id":"\ud800\u"}`, "id", "", `key field "id" is not a usable string`},
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

// TestRecordKeyInjective loads keys that encoding/json decodes alike (every lone surrogate becomes
// U+FFFD) and keys whose text spells such an escape: each gets its own key, and a key string of
// valid UTF-16 that spells none keeps its decoding.
func TestRecordKeyInjective(t *testing.T) {
	distinct := []string{`"\ud800"`, `"\ud801"`, `"\ufffd"`, `"\udc00"`, `"\\ud800"`, `"\\\ud800"`, `"\\\\ud800"`,
		`"x\ud800"`, `"\ud800\ud800"`, `"\ud800ud800"`, `"\\ud800ud800"`, `"\ud83d"`, `"\ude00"`, `"\ud83d\ude00"`}
	seen := map[string]string{}
	for _, raw := range distinct {
		key, reason := RecordKey([]byte(`{"id":`+raw+`}`), "id")
		if reason != "" {
			t.Fatalf("%s: %s", raw, reason)
		}
		if other, ok := seen[key]; ok {
			t.Errorf("%s and %s give the same key %q", raw, other, key)
		}
		seen[key] = raw
	}
	for _, raw := range []string{`"abc"`, `"caf\u00e9"`, `"\ud83d\ude00"`, `"tab\there"`, `"C:\\Users\\x"`, `"\\u0041"`,
		`"\u005c"`, `"\/"`, `"\\"`, `"\\\\ud8zz"`, `"\\uD800"`} {
		var want string
		if err := json.Unmarshal([]byte(raw), &want); err != nil {
			t.Fatal(err)
		}
		if key, _ := RecordKey([]byte(`{"id":`+raw+`}`), "id"); key != want {
			t.Errorf("%s: key %q, want its decoding %q", raw, key, want)
		}
	}
}

// FuzzKeyString decodes a key written as any sequence of UTF-16 code units, each escaped or (when
// ASCII) as itself, and reads the code units back from the key: KeyString loses nothing, so two
// different key strings never give one key.
func FuzzKeyString(f *testing.F) {
	for _, s := range []string{"\x00\xd8", "\x5c\x00\x75\x00\x64\x00\x38\x00\x30\x00\x30\x00", "\x3d\xd8\x00\xde", "\x5c\x00\x00\xd8", "\xfd\xff"} {
		f.Add([]byte(s), uint64(0))
	}
	f.Fuzz(func(t *testing.T, data []byte, literal uint64) {
		units := make([]uint16, len(data)/2)
		raw := []byte{'"'}
		for i := range units {
			units[i] = uint16(data[2*i]) | uint16(data[2*i+1])<<8
			u := units[i]
			if literal&(1<<(i%64)) != 0 && u >= 0x20 && u < 0x7f && u != '"' && u != '\\' {
				raw = append(raw, byte(u))
			} else {
				raw = fmt.Appendf(raw, `\u%04x`, u)
			}
		}
		raw = append(raw, '"')
		key, ok := KeyString(raw)
		if !ok {
			t.Fatalf("KeyString(%s) refused it", raw)
		}
		if got := keyCodeUnits(t, key); !slices.Equal(got, units) {
			t.Fatalf("KeyString(%s) = %q, which reads back as %x, not %x", raw, key, got, units)
		}
	})
}

// keyCodeUnits reads back the UTF-16 code units of a key that KeyString wrote: a run of backslashes
// before "ud8"…"udf" and two hex digits is odd when it ends in a lone surrogate's escape, and holds
// twice the backslashes of the text.
func keyCodeUnits(t *testing.T, key string) []uint16 {
	rs := []rune(key)
	var out []uint16
	spells := func(i int) bool {
		if i+5 > len(rs) || rs[i] != 'u' || rs[i+1] != 'd' || !strings.ContainsRune("89abcdef", rs[i+2]) {
			return false
		}
		return strings.ContainsRune("0123456789abcdef", rs[i+3]) && strings.ContainsRune("0123456789abcdef", rs[i+4])
	}
	for i := 0; i < len(rs); {
		if rs[i] != '\\' {
			out = utf16.AppendRune(out, rs[i])
			i++
			continue
		}
		m := 0
		for i < len(rs) && rs[i] == '\\' {
			m++
			i++
		}
		if !spells(i) {
			for range m {
				out = append(out, '\\')
			}
			continue
		}
		for range m / 2 {
			out = append(out, '\\')
		}
		if m%2 == 1 {
			v, err := strconv.ParseUint(string(rs[i+1:i+5]), 16, 16)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, uint16(v))
			i += 5
		}
	}
	return out
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
		if strings.ContainsRune(want, utf8.RuneError) || strings.Contains(want, `\ud`) {
			// A lone surrogate, which encoding/json turns into U+FFFD, or a text that spells its
			// escape: RecordKey keeps them apart (TestRecordKeyInjective, FuzzKeyString).
			ok = ok && reason == ""
			want = key
		}
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
