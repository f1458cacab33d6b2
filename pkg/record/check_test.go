package record

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		in   string
		want error
	}{
		{`{"id":1,"name":"x","tags":["a","b"],"n":{"a":null,"b":true,"c":-1.5e+3}}`, nil},
		{` [1, "two", {}, []] `, nil},
		{`"just a string"`, nil},
		{`{"a":1,"b":{"a":2}}`, nil}, // the same name in another object is fine
		{`{"a":1,"a":2}`, ErrDuplicateKey},
		{`{"a":1,"\u0061":2}`, ErrDuplicateKey},
		{`{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k3":3}`, ErrDuplicateKey},
		{"{\"name\":\"\xff\"}", ErrInvalidUTF8},
		{`{"id": 1,`, ErrNotJSON},
		{`{"id": 01}`, ErrNotJSON},
		{`{"id": 1} extra`, ErrNotJSON},
		{"{\"s\":\"a\tb\"}", ErrNotJSON},
		{`<html>`, ErrNotJSON},
		{``, ErrNotJSON},
		{strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth), nil},
		{strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), ErrTooDeep},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if err := Check([]byte(tt.in)); !errors.Is(err, tt.want) {
				t.Fatalf("Check(%q) = %v, want %v", tt.in, err, tt.want)
			}
		})
	}
}

// FuzzCheck agrees with encoding/json on what is JSON, for records without duplicate names that
// nest within the limit.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{`{"id":1}`, `[1,2.5e-3,"x",null,true]`, `{"a":{"b":[{}]}}`, `"\u00e9\n"`, `-0`, `{"a":1,"a":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := Check(b)
		valid := json.Valid(b)
		switch {
		case errors.Is(err, ErrDuplicateKey), errors.Is(err, ErrTooDeep), errors.Is(err, ErrInvalidUTF8):
			// Stricter than encoding/json by design.
		case (err == nil) != valid:
			t.Fatalf("Check(%q) = %v, json.Valid = %v", b, err, valid)
		}
	})
}

// FuzzValid agrees with encoding/json's Valid on every input that nests within maxValidDepth.
func FuzzValid(f *testing.F) {
	for _, s := range []string{`{"id":1}`, `[1,2.5e-3,"x",null,true]`, `{"a":{"b":[{}]}}`, `"\u00e9\n"`, `-0`, `{"a":1,"a":2}`,
		"\"\xff\"", `{"a":[1,}`, ` [] `, `01`, `{"a\u0061":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if bytes.Count(b, []byte("["))+bytes.Count(b, []byte("{")) > maxValidDepth {
			t.Skip()
		}
		if got, want := Valid(b), json.Valid(b); got != want {
			t.Fatalf("Valid(%q) = %v, json.Valid = %v", b, got, want)
		}
	})
}

// TestValidDepth: a value nested deeper than maxValidDepth is not valid, and one at it is.
func TestValidDepth(t *testing.T) {
	at := strings.Repeat("[", maxValidDepth) + strings.Repeat("]", maxValidDepth)
	if !Valid([]byte(at)) || Valid([]byte("["+at+"]")) {
		t.Fatalf("Valid at %d levels = %v, at %d = %v", maxValidDepth, Valid([]byte(at)), maxValidDepth+1, Valid([]byte("["+at+"]")))
	}
}

func BenchmarkValid(b *testing.B) {
	var page bytes.Buffer
	page.WriteString(`{"data":[`)
	for i := range 1000 {
		if i > 0 {
			page.WriteByte(',')
		}
		fmt.Fprintf(&page, `{"id":%d,"name":"user-%d","email":"user-%d@example.com","created_at":"2024-01-01T00:00:00Z","pad":"%s"}`, i, i, i, strings.Repeat("x", 180))
	}
	page.WriteString(`],"total":100000}`)
	for _, bc := range []struct {
		name  string
		valid func([]byte) bool
	}{{"record.Valid", Valid}, {"encoding/json", json.Valid}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(page.Len()))
			b.ReportAllocs()
			for b.Loop() {
				if !bc.valid(page.Bytes()) {
					b.Fatal("not valid")
				}
			}
		})
	}
}

func BenchmarkCheck(b *testing.B) {
	rec := []byte(`{"id":123456,"name":"user-123456","email":"user-123456@example.com","created_at":"2024-01-01T00:00:00Z","pad":"` + strings.Repeat("x", 180) + `"}`)
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		if err := Check(rec); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzPlainRun holds plainRun to the byte loop it stands in for.
func FuzzPlainRun(f *testing.F) {
	for _, s := range []string{"", "abcdefgh", `abcdefg"`, "abc\\defghij", "\x1f2345678", "ééééé\"", "\x20\x21\x5b\x5d\x7f\x80\xff!", strings.Repeat("x", 40) + "\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		first := len(b)
		for i, c := range b {
			if c == '"' || c == '\\' || c < 0x20 {
				first = i
				break
			}
		}
		want := min(first, len(b)/8*8)
		if got := plainRun(b); got != want {
			t.Fatalf("plainRun(%q) = %d, want %d", b, got, want)
		}
	})
}
