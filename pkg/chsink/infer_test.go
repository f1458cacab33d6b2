package chsink

import "testing"

// TestInference proposes the type that holds every value seen, exactly.
func TestInference(t *testing.T) {
	for _, c := range []struct {
		values []string // "" is a record without the field
		old    string   // on ClickHouse 18.16: no Bool, no DateTime64
		cur    string
	}{
		{[]string{`1`, `-5`, `9007199254740993`}, "Int64", "Int64"},
		{[]string{`1`, `18446744073709551615`}, "UInt64", "UInt64"},
		{[]string{`-1`, `18446744073709551615`}, "String", "String"},
		{[]string{`1`, `2.5`}, "Float64", "Float64"},
		{[]string{`1e3`}, "Float64", "Float64"},
		{[]string{`true`, `false`}, "UInt8", "Bool"},
		{[]string{`"2024-01-01T00:00:00Z"`, `"2024-01-02T10:00:00.5+02:00"`}, "DateTime", "DateTime64(3)"},
		{[]string{`"2024-01-01T00:00:00Z"`, `"soon"`}, "String", "String"},
		{[]string{`"6f1c8a2e-0000-4000-8000-000000000001"`}, "UUID", "UUID"},
		{[]string{`"a"`, `null`}, "Nullable(String)", "Nullable(String)"},
		{[]string{`5`, ``}, "Nullable(Int64)", "Nullable(Int64)"},
		{[]string{`"a"`, `1`}, "String", "String"},
		{[]string{`{"a": 1}`}, "String", "String"},
		{[]string{`[1, 2]`, `[3, null]`}, "Array(Nullable(Int64))", "Array(Nullable(Int64))"},
		{[]string{`["x"]`, `[]`}, "Array(String)", "Array(String)"},
		{[]string{`[[1]]`}, "String", "String"},
		{[]string{`[]`}, "String", "String"},
		{[]string{`null`}, "Nullable(String)", "Nullable(String)"},
	} {
		var in Inference
		for _, v := range c.values {
			in.Add([]byte(v))
		}
		if got := in.Type(false, false); got != c.old {
			t.Errorf("%v on 18.16: %s, want %s", c.values, got, c.old)
		}
		if got := in.Type(true, true); got != c.cur {
			t.Errorf("%v on a current server: %s, want %s", c.values, got, c.cur)
		}
		// Every value seen converts into the type proposed.
		ty := mustType(t, in.Type(false, false))
		for _, v := range c.values {
			if _, err := Convert(ty, []byte(v)); err != nil && !(v == "" || v == "null") {
				t.Errorf("%v: %s does not take %s: %v", c.values, ty.Name, v, err)
			}
		}
	}
}
