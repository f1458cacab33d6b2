package chsink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

func mustType(t *testing.T, s string) *Type {
	t.Helper()
	ty, err := ParseType(s)
	if err != nil {
		t.Fatal(err)
	}
	return ty
}

// TestParseType reads the types typed columns take, and refuses what is not one.
func TestParseType(t *testing.T) {
	for s, want := range map[string]string{
		"Int64": "int64", "UInt8": "uint8", "Float32": "float32", "Nullable(Int32)": "*int32", "Array(String)": "[]string",
		"Array(Nullable(UInt64))": "[]*uint64", "LowCardinality(String)": "string", "LowCardinality(Nullable(String))": "*string",
		"Decimal(18, 4)": "decimal.Decimal", "Decimal64(2)": "decimal.Decimal", "DateTime64(3)": "time.Time",
		"DateTime('UTC')": "time.Time", "Date": "time.Time", "UUID": "uuid.UUID", "Enum8('a' = 1, 'b,c' = 2)": "string",
		"Bool": "bool", "Array(Array(Int8))": "[][]int8",
	} {
		ty, err := ParseType(s)
		if err != nil {
			t.Errorf("%s: %v", s, err)
			continue
		}
		if got := ty.GoType().String(); got != want {
			t.Errorf("%s: Go type %s, want %s", s, got, want)
		}
	}
	if e := mustType(t, "Enum8('a' = 1, 'b,c' = 2, 'it\\'s' = 3)"); !reflect.DeepEqual(e.Enum, []string{"a", "b,c", "it's"}) {
		t.Errorf("enum values %q", e.Enum)
	}
	for _, s := range []string{"Int65", "Nullable(Array(Int8))", "Nullable(Nullable(Int8))", "Decimal(40, 2)", "Decimal(5, 6)", "DateTime64(10)", "Int8(3)", "Array(Int8", "Enum8(a = 1)"} {
		if _, err := ParseType(s); err == nil {
			t.Errorf("%s: parsed", s)
		}
	}
}

// TestConvertExact converts awkward values into typed columns exactly, and refuses those that do
// not fit with the reason.
func TestConvertExact(t *testing.T) {
	d := func(s string) decimal.Decimal { v, _ := decimal.NewFromString(s); return v }
	ts := func(s string) time.Time { v, _ := time.Parse(time.RFC3339Nano, s); return v.UTC() }
	i64 := int64(-9007199254740993)
	for _, c := range []struct {
		typ, raw string
		want     any
	}{
		{"Int64", `9007199254740993`, int64(9007199254740993)}, // 2^53+1, no float64 detour
		{"Int64", `-9223372036854775808`, int64(math.MinInt64)},
		{"UInt64", `18446744073709551615`, uint64(math.MaxUint64)},
		{"UInt64", `"18446744073709551615"`, uint64(math.MaxUint64)}, // as APIs write big integers
		{"Int32", `1e3`, int32(1000)},
		{"Int8", `-128`, int8(-128)},
		{"UInt8", `true`, uint8(1)},
		{"Float64", `1e308`, 1e308},
		{"Float64", `-0`, math.Copysign(0, -1)},
		{"Float32", `0.1`, float32(0.1)},
		{"Decimal(38, 9)", `12345678901234567890.123456789`, d("12345678901234567890.123456789")},
		{"Decimal(10, 2)", `"-0.50"`, d("-0.5")},
		{"Bool", `false`, false},
		{"String", `"line\u2028sep \u0000 nul 😀 שלום"`, "line\u2028sep \x00 nul 😀 שלום"},
		{"String", `{"a": [1, 2]}`, `{"a": [1, 2]}`}, // nested: its JSON text
		{"String", `12345678901234567890`, "12345678901234567890"},
		{"UUID", `"6f1c8a2e-0000-4000-8000-000000000001"`, uuid.MustParse("6f1c8a2e-0000-4000-8000-000000000001")},
		{"Enum8('a' = 1, 'b' = 2)", `"b"`, "b"},
		{"DateTime", `"2024-03-01T12:30:45+02:00"`, ts("2024-03-01T10:30:45Z")},
		{"DateTime", `1709296245`, ts("2024-03-01T12:30:45Z")},
		{"DateTime", `1709296245123`, ts("2024-03-01T12:30:45Z")}, // milliseconds, cut to the second
		{"DateTime64(3)", `1709296245123`, ts("2024-03-01T12:30:45.123Z")},
		{"DateTime64(6)", `"2024-03-01T12:30:45.123456Z"`, ts("2024-03-01T12:30:45.123456Z")},
		{"Date", `"2024-02-29"`, ts("2024-02-29T00:00:00Z")},
		{"Nullable(Int64)", `null`, (*int64)(nil)},
		{"Nullable(Int64)", ``, (*int64)(nil)}, // missing
		{"Nullable(Int64)", `-9007199254740993`, &i64},
		{"Array(Int64)", `[1, 9007199254740993]`, []int64{1, 9007199254740993}},
		{"Array(Nullable(String))", `["a", null]`, []*string{ptr("a"), nil}},
		{"LowCardinality(String)", `"x"`, "x"},
		{"String", `"` + strings.Repeat("é", 25_000) + `"`, strings.Repeat("é", 25_000)},
	} {
		got, err := Convert(mustType(t, c.typ), []byte(c.raw))
		if err != nil {
			t.Errorf("%s %s: %v", c.typ, short([]byte(c.raw)), err)
			continue
		}
		if !equalValue(got, c.want) {
			t.Errorf("%s %s: %#v, want %#v", c.typ, short([]byte(c.raw)), got, c.want)
		}
	}
	for _, c := range []struct{ typ, raw, reason string }{
		{"Int8", `128`, "128 does not fit Int8"},
		{"UInt64", `18446744073709551616`, "18446744073709551616 does not fit UInt64"},
		{"UInt32", `-1`, "-1 does not fit UInt32"},
		{"Int64", `1.5`, "1.5 is not an integer"},
		{"Int64", `"abc"`, `"abc" is not an integer`},
		{"Float64", `1e309`, "1e309 is out of the range of Float64"},
		{"Decimal(10, 2)", `1.234`, "1.234 has more than 2 decimal places"},
		{"Decimal(4, 2)", `123.4`, "123.4 has more than 2 digits before the point"},
		{"Bool", `1`, "1 is not true or false"},
		{"UUID", `"nope"`, `"nope" is not a UUID`},
		{"Enum8('a' = 1)", `"z"`, `"z" is not one of the values of Enum8('a' = 1)`},
		{"DateTime", `"yesterday"`, `"yesterday" is not an RFC 3339 time`},
		{"DateTime", `"1969-12-31T23:59:59Z"`, "1969-12-31T23:59:59Z is outside the range of DateTime"},
		{"Int64", `null`, "null, and Int64 is not Nullable"},
		{"Int64", ``, "missing"},
		{"Array(Int8)", `[1, 300]`, "item 1: 300 does not fit Int8"},
		{"Array(Int8)", `{}`, "{} is not an array"},
	} {
		_, err := Convert(mustType(t, c.typ), []byte(c.raw))
		var ce *ConvertError
		if !errors.As(err, &ce) || ce.Reason != c.reason {
			t.Errorf("%s %s: %v, want %q", c.typ, c.raw, err, c.reason)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// equalValue compares converted values, decimals by value and floats by bits (so -0 is not 0).
func equalValue(a, b any) bool {
	switch x := a.(type) {
	case decimal.Decimal:
		y, ok := b.(decimal.Decimal)
		return ok && x.Equal(y)
	case float64:
		y, ok := b.(float64)
		return ok && math.Float64bits(x) == math.Float64bits(y)
	case time.Time:
		y, ok := b.(time.Time)
		return ok && x.Equal(y)
	}
	return fmt.Sprintf("%#v", deref(a)) == fmt.Sprintf("%#v", deref(b))
}

// deref writes pointers, and slices of them, as what they point at.
func deref(v any) any {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer:
		if rv.IsNil() {
			return "nil"
		}
		return deref(rv.Elem().Interface())
	case reflect.Slice:
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = deref(rv.Index(i).Interface())
		}
		return out
	}
	return v
}

// TestConvertedValuesLand inserts converted values into typed columns of the real ClickHouse
// (every type here exists on 18.16) and reads them back as the server writes them.
func TestConvertedValuesLand(t *testing.T) {
	cfg := stacktest.ClickHouse(t)
	ctx := context.Background()
	conn, err := chconn.Open(ctx, cfg, stacktest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cols := []struct{ name, typ, raw, want string }{
		{"i64", "Int64", `9007199254740993`, "9007199254740993"},
		{"imin", "Int64", `-9223372036854775808`, "-9223372036854775808"},
		{"u64", "UInt64", `"18446744073709551615"`, "18446744073709551615"},
		{"f", "Float64", `1e308`, "1e308"},
		{"negzero", "Float64", `-0`, "-0"},
		{"dec", "Decimal(38, 9)", `12345678901234567890.123456789`, "12345678901234567890.123456789"},
		{"s", "String", `"line\u2028 nul\u0000 😀 שלום"`, "line\u2028 nul\x00 😀 שלום"},
		{"nested", "String", `{"a": [1, {"b": null}]}`, `{"a": [1, {"b": null}]}`},
		{"long", "String", `"` + strings.Repeat(`\u05e9\u2028x`, 50_000/6) + `"`, strings.Repeat("ש\u2028x", 50_000/6)}, // 50 KB of text
		{"id", "UUID", `"6f1c8a2e-0000-4000-8000-000000000001"`, "6f1c8a2e-0000-4000-8000-000000000001"},
		{"e", "Enum8('a' = 1, 'b' = 2)", `"b"`, "b"},
		{"d", "Date", `"2024-02-29"`, "2024-02-29"},
		{"dt", "DateTime", `"2024-03-01T12:30:45+02:00"`, "2024-03-01 10:30:45"},
		{"dtms", "DateTime", `1709296245123`, "2024-03-01 12:30:45"},
		{"n", "Nullable(Int64)", `null`, `\N`},
		{"missing", "Nullable(String)", ``, `\N`},
		{"arr", "Array(Int64)", `[1, 9007199254740993]`, "[1,9007199254740993]"},
		{"arrn", "Array(Nullable(String))", `["a", null]`, "['a',NULL]"},
	}
	var defs, names, reads []string
	values := make([]any, len(cols))
	for i, c := range cols {
		defs = append(defs, c.name+" "+c.typ)
		names = append(names, c.name)
		reads = append(reads, "toString("+c.name+")")
		if strings.HasPrefix(c.typ, "Nullable") {
			reads[i] = "ifNull(toString(" + c.name + "), '\\\\N')"
		}
		v, err := Convert(mustType(t, c.typ), []byte(c.raw))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		values[i] = v
	}
	if err := conn.Exec(ctx, "CREATE TABLE typed ("+strings.Join(defs, ", ")+") ENGINE = MergeTree ORDER BY tuple()"); err != nil {
		t.Fatal(err)
	}
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO typed ("+strings.Join(names, ", ")+")")
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Append(values...); err != nil {
		t.Fatalf("append: %v", err)
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("insert: %v", err)
	}
	got := make([]string, len(cols))
	dst := make([]any, len(cols))
	for i := range got {
		dst[i] = &got[i]
	}
	if err := conn.QueryRow(ctx, "SELECT "+strings.Join(reads, ", ")+" FROM typed").Scan(dst...); err != nil {
		t.Fatal(err)
	}
	for i, c := range cols {
		if got[i] != c.want {
			t.Errorf("%s %s: %q landed as %q, want %q", c.name, c.typ, c.raw, got[i], c.want)
		}
	}
}

// FuzzConvertFast holds the fast paths of Convert to the ones they stand in for: jsonString to
// encoding/json, isNumber to json.Valid, plainInt to big.Int, the integer epoch to big.Float.
func FuzzConvertFast(f *testing.F) {
	for _, s := range []string{`"plain"`, `"esc\"aped"`, `"\u00e9"`, "\"\xff\"", `"tab	"`, `""`, `"`, `"a"b"`,
		"0", "-0", "01", "1.5", "1e3", "-", "1.", ".5", "9223372036854775807", "9223372036854775808",
		"-9223372036854775808", "18446744073709551615", "18446744073709551616", "1700000000", "1700000000000",
		"-99999999999", "100000000000", "99999999999999", "100000000000000", `"123"`} {
		f.Add(s)
	}
	types := []*Type{}
	for _, name := range []string{"Int8", "Int64", "UInt8", "UInt32", "UInt64", "DateTime", "DateTime64(3)"} {
		typ, err := ParseType(name)
		if err != nil {
			f.Fatal(err)
		}
		types = append(types, typ)
	}
	f.Fuzz(func(t *testing.T, s string) {
		raw := []byte(s)
		if len(raw) > 0 && raw[0] == '"' {
			var want string
			werr := json.Unmarshal(raw, &want)
			if got, ok := jsonString(raw); ok != (werr == nil) || got != want {
				t.Fatalf("jsonString(%q) = %q %v, encoding/json %q %v", s, got, ok, want, werr)
			}
		}
		if s == strings.TrimSpace(s) {
			want := json.Valid(raw) && s != "" && (s[0] == '-' || (s[0] >= '0' && s[0] <= '9'))
			if isNumber(s) != want {
				t.Fatalf("isNumber(%q) = %v, want %v", s, !want, want)
			}
		}
		if len(raw) == 0 || len(bytes.TrimSpace(raw)) != len(raw) {
			return
		}
		lit, ok := numberText(raw)
		if !ok {
			return
		}
		for _, typ := range types[:5] {
			got, gerr := convertInt(typ, raw)
			want, werr := bigInt(typ, raw, lit)
			if (gerr == nil) != (werr == nil) || (gerr == nil && got != want) {
				t.Fatalf("%s of %q = %v %v, big.Int %v %v", typ.Name, s, got, gerr, want, werr)
			}
		}
		if raw[0] == '"' && strings.ContainsAny(lit, "-:T") {
			return // read as RFC 3339 text
		}
		for _, typ := range types[5:] {
			got, gerr := convertTime(typ, raw)
			want, werr := bigTime(typ, raw, lit)
			if (gerr == nil) != (werr == nil) || (gerr == nil && !got.(time.Time).Equal(want.(time.Time))) {
				t.Fatalf("%s of %q = %v %v, big.Float %v %v", typ.Name, s, got, gerr, want, werr)
			}
		}
	})
}
