package source

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/record"
)

func TestParsePage(t *testing.T) {
	tests := []struct {
		name, body, records, total string
		want                       []string
		wantTotal                  int64
		err                        error
	}{
		{"records and total", `{"data":[{"id":1},{"id":2}],"total":7}`, "data", "total", []string{`{"id":1}`, `{"id":2}`}, 7, nil},
		{"body is the array", ` [ {"id":1} , "x", 3, [4], null ] `, "", "", []string{`{"id":1}`, `"x"`, `3`, `[4]`, `null`}, -1, nil},
		{"nested path", `{"result":{"items":[{"id":"a, b"}]},"meta":{"count":1}}`, "result.items", "meta.count", []string{`{"id":"a, b"}`}, 1, nil},
		{"total beside the records, after them", `{"result":{"items":[{"id":1},{"id":"]"}],"count":2},"count":9}`, "result.items", "result.count", []string{`{"id":1}`, `{"id":"]"}`}, 2, nil},
		{"total after the records, a total inside them", `{"data":[{"total":5}],"total":1}`, "data", "total", []string{`{"total":5}`}, 1, nil},
		{"empty page", `{"data":[],"total":0}`, "data", "total", []string{}, 0, nil},
		{"no total", `{"data":[{"id":1}]}`, "data", "total", []string{`{"id":1}`}, -1, nil},
		{"total not an integer", `{"data":[],"total":"many"}`, "data", "total", []string{}, -1, nil},
		{"html", `<html>busy</html>`, "data", "", nil, -1, ErrNotJSON},
		{"truncated", `{"data":[{"id":1},{"id"`, "data", "", nil, -1, ErrNotJSON},
		{"records missing", `{"items":[]}`, "data", "", nil, -1, ErrPageShape},
		{"records not an array", `{"data":{"id":1}}`, "data", "", nil, -1, ErrPageShape},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePage([]byte(tt.body), tt.records, tt.total, 0)
			if !errors.Is(err, tt.err) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			got := make([]string, len(p.Records))
			for i, r := range p.Records {
				got[i] = string(r)
			}
			if len(got) != len(tt.want) || p.Total != tt.wantTotal {
				t.Fatalf("records %q total %d, want %q total %d", got, p.Total, tt.want, tt.wantTotal)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("record %d = %q, want %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// FuzzParsePage checks the records against encoding/json's reading of the same array.
func FuzzParsePage(f *testing.F) {
	for _, s := range []string{`[{"id":1},{"id":"x"}]`, `[ 1 , "a,b" , {"x":[1,{"y":"]"}]} ]`, `[]`, `["\"]\\"", {}]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var want []json.RawMessage
		wantErr := json.Unmarshal(body, &want)
		p, err := ParsePage(body, "", "", 0)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("ParsePage(%q) error %v, encoding/json says %v", body, err, wantErr)
		}
		if err != nil {
			return
		}
		if len(p.Records) != len(want) {
			t.Fatalf("ParsePage(%q) = %d records, encoding/json %d", body, len(p.Records), len(want))
		}
		for i := range want {
			if !bytes.Equal(p.Records[i], bytes.TrimSpace(want[i])) {
				t.Fatalf("record %d = %q, encoding/json %q", i, p.Records[i], want[i])
			}
		}
	})
}

// TestParsePageChecked: a page whose records all pass the loader's check goes Checked; a page
// with a record that fails it (a member name twice, bytes that are not UTF-8, nesting past the
// bound once the page's own levels count, a duplicate outside the records) does not, and its
// records are read all the same.
func TestParsePageChecked(t *testing.T) {
	deep := strings.Repeat("[", record.MaxDepth-1) + strings.Repeat("]", record.MaxDepth-1)
	tests := []struct {
		name, body, records string
		checked             bool
	}{
		{"plain", `{"data":[{"id":1,"n":"a"},{"id":2}],"total":2}`, "data", true},
		{"body is the array", `[{"id":1},"x",3]`, "", true},
		{"a member name twice", `{"data":[{"id":1},{"id":2,"id":3}]}`, "data", false},
		{"escaped twice", `{"data":[{"a":1,"\u0061":2}]}`, "data", false},
		{"not UTF-8", "{\"data\":[{\"id\":\"\xff\"}]}", "data", false},
		{"a record as deep as a record may be, in a page", `{"data":[{"id":1,"x":` + deep + `}]}`, "data", false},
		{"the same record as the page", `[{"id":1,"x":` + deep + `}]`, "", false},
		{"a record one level less deep", `[{"id":1,"x":` + deep[1:len(deep)-1] + `}]`, "", true},
		{"the page's own member twice", `{"data":[{"id":1}],"data":[{"id":1}]}`, "data", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePage([]byte(tt.body), tt.records, "", 0)
			if err != nil {
				t.Fatal(err)
			}
			if p.Checked != tt.checked {
				t.Fatalf("checked %v, want %v", p.Checked, tt.checked)
			}
			fails := false
			for _, r := range p.Records {
				fails = fails || record.Check(r) != nil
			}
			if p.Checked && fails {
				t.Fatal("a record of a checked page fails the check")
			}
		})
	}
}

// FuzzParsePageChecked proves the loader's trust: every record of a page ParsePage marks Checked
// passes record.Check on its own.
func FuzzParsePageChecked(f *testing.F) {
	for _, s := range []string{`{"data":[{"id":1},{"id":"x"}]}`, `{"data":[{"a":{"b":[1,{"c":2}]}}]}`, `{"data":[{"a":1,"a":2}]}`, `{"data":[]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := ParsePage(body, "data", "", 0)
		if err != nil || !p.Checked {
			return
		}
		for i, r := range p.Records {
			if err := record.Check(r); err != nil {
				t.Fatalf("record %d (%q) of a checked page fails the check: %v", i, r, err)
			}
		}
	})
}

func BenchmarkParsePage(b *testing.B) {
	var buf bytes.Buffer
	buf.WriteString(`{"data":[`)
	for i := range int64(1000) {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(demosource.Record(i, 300))
	}
	buf.WriteString(`],"total":100000,"offset":0,"limit":1000}`)
	body := buf.Bytes()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		p, err := ParsePage(body, "data", "total", 0)
		if err != nil || len(p.Records) != 1000 {
			b.Fatal(err)
		}
		for _, r := range p.Records {
			RecordKey(r, "id")
		}
	}
}
