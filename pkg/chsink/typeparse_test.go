package chsink

import (
	"strings"
	"testing"
)

// TestParseTypeRendersItsOwnSQL: a type's SQL is rendered from what was parsed, in ClickHouse's own
// spelling, whatever spacing or alias the spec wrote.
func TestParseTypeRendersItsOwnSQL(t *testing.T) {
	for in, want := range map[string]string{
		"Int64":                               "Int64",
		" Nullable ( Int32 ) ":                "Nullable(Int32)",
		"Decimal64(2)":                        "Decimal(18, 2)",
		"Decimal(18,4)":                       "Decimal(18, 4)",
		"DateTime('UTC')":                     "DateTime('UTC')",
		"DateTime64(3,'Europe/Berlin')":       "DateTime64(3, 'Europe/Berlin')",
		"LowCardinality(Nullable(String))":    "LowCardinality(Nullable(String))",
		"Array(Array(Nullable(UInt8)))":       "Array(Array(Nullable(UInt8)))",
		"Enum8('a'=1,'b,c' = -2)":             "Enum8('a' = 1, 'b,c' = -2)",
		`Enum16('it\'s' = 300, 'back\\' = 2)`: `Enum16('it\'s' = 300, 'back\\' = 2)`,
	} {
		ty, err := ParseType(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if ty.Name != want {
			t.Errorf("%q renders %q, want %q", in, ty.Name, want)
		}
	}
}

// TestParseTypeRefusesWhatIsNoType: arguments that would carry SQL into CREATE TABLE (extra columns,
// DEFAULT, TTL, comments, settings), unknown time zones, precisions out of range and anything outside
// the grammar are refused, fast, with what was wrong.
func TestParseTypeRefusesWhatIsNoType(t *testing.T) {
	for in, why := range map[string]string{
		"DateTime('UTC'), evil String DEFAULT toString(1)": "after the type",
		"DateTime('UTC') DEFAULT now()":                    "after the type",
		"DateTime64(3, 'UTC') TTL toDateTime(0)":           "after the type",
		"DateTime64(3, 'UTC', x String)":                   `want ")"`,
		"DateTime('UTC'), `x` String":                      "after the type",
		"DateTime('Mars/Olympus')":                         "not a time zone",
		"DateTime('../../etc/passwd')":                     "not a time zone",
		"DateTime('Local')":                                "not a time zone",
		"DateTime64(3, 'UTC\\') -- ')":                     "not a time zone",
		"DateTime64(10)":                                   "0 to 9",
		"DateTime64(-1)":                                   "0 to 9",
		"DateTime64(99999999999999999999999)":              "0 to 9",
		"Decimal(40, 2)":                                   "1 to 38",
		"Decimal(5, 6)":                                    "0 to 5",
		"Decimal(5)":                                       `want ","`,
		"Int8(3)":                                          "takes no arguments",
		"JSON(max_dynamic_paths = 1)":                      "takes no arguments",
		"Array(Int8":                                       `want ")"`,
		"Enum8(a = 1)":                                     "must be quoted",
		"Enum8('a')":                                       `want "="`,
		"Enum8('a' = 128)":                                 "-128 to 127",
		"Enum8('a' = 1, 'a' = 2)":                          "given twice",
		"Enum8('a' = 1, 'b' = 1)":                          "given twice",
		"Enum8('a\n' = 1)":                                 "control characters",
		"Enum8('a\\n' = 1)":                                "escape only",
		"Nullable(Array(Int8))":                            "neither",
		"Nullable(Nullable(Int8))":                         "neither",
		"Nullable(LowCardinality(String))":                 "neither",
		"LowCardinality(Array(String))":                    "LowCardinality takes",
		"Int65":                                            "unknown type",
		"Map(String, String)":                              "unknown type",
		"String; DROP TABLE x":                             "unexpected character",
		"String /* comment */":                             "unexpected character",
		"":                                                 "want a type name",
		strings.Repeat("Array(", 9) + "Int8" + strings.Repeat(")", 9): "nest more than 8",
		strings.Repeat("x", MaxTypeLen+1):                             "at most 4096",
	} {
		_, err := ParseType(in)
		if err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("%q: %v, want an error saying %q", abbreviate(in, 60), err, why)
		}
	}
}

// FuzzParseType: whatever a spec writes, ParseType refuses it or gives a type whose rendered SQL
// parses to itself and holds nothing but the grammar's own tokens.
func FuzzParseType(f *testing.F) {
	for _, s := range []string{"Int64", "Nullable(DateTime64(3, 'UTC'))", "Enum8('a' = 1, 'b,c' = 2)", `Enum16('\'' = -1)`,
		"LowCardinality(Nullable(String))", "Array(Array(Decimal(18, 4)))", "DateTime('UTC'), x String DEFAULT 1", "Decimal32(9)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ty, err := ParseType(s)
		if err != nil {
			return
		}
		again, err := ParseType(ty.Name)
		if err != nil || again.Name != ty.Name {
			t.Fatalf("%q renders %q, which parses to %v, %v", s, ty.Name, again, err)
		}
		// Outside quotes, only identifiers, integers, spaces and ( ) , = .
		outside := ty.Name
		for e := ty; e != nil; e = e.Elem {
			for _, v := range e.Enum {
				outside = strings.Replace(outside, quoteString(v), "''", 1)
			}
			if e.TimeZone != "" {
				outside = strings.Replace(outside, quoteString(e.TimeZone), "''", 1)
			}
		}
		if strings.Trim(outside, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-(),= '") != "" {
			t.Fatalf("%q renders %q", s, ty.Name)
		}
	})
}
