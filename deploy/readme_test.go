package deploy

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/sluicedata/sluice/pkg/chconn"
	svc "github.com/sluicedata/sluice/pkg/service"
)

// variable is one SLUICE_ variable a configuration struct reads, with its default.
type variable struct {
	name, def string
}

// variables walks a configuration struct's env tags the way go-envconfig does, with prefixes.
func variables(t reflect.Type, prefix string) []variable {
	var out []variable
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("env")
		name, opts, _ := strings.Cut(tag, ",")
		name = strings.TrimSpace(name)
		def, nested := "", prefix
		for _, o := range strings.Split(opts, ",") {
			o = strings.TrimSpace(o)
			if v, ok := strings.CutPrefix(o, "default="); ok {
				def = v
			}
			if p, ok := strings.CutPrefix(o, "prefix="); ok {
				nested += p
			}
		}
		switch {
		case name != "":
			out = append(out, variable{prefix + name, def})
		case f.Type.Kind() == reflect.Struct:
			out = append(out, variables(f.Type, nested)...)
		}
	}
	return out
}

// readmeRow matches a configuration table row: | `SLUICE_X` | `default` or (empty) | meaning |.
var readmeRow = regexp.MustCompile("(?m)^\\| `(SLUICE_[A-Z0-9_]+)` \\| ([^|]*) \\|")

// TestReadmeDocumentsEveryVariable checks that the README's configuration reference lists every
// variable the shared configuration structs read, with the default the code applies.
func TestReadmeDocumentsEveryVariable(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{}
	for _, m := range readmeRow.FindAllStringSubmatch(string(readme), -1) {
		documented[m[1]] = strings.TrimSpace(m[2])
	}

	vars := variables(reflect.TypeFor[svc.Config](), "SLUICE_")
	vars = append(vars, variables(reflect.TypeFor[chconn.Config](), "SLUICE_CLICKHOUSE_")...)
	if len(vars) < 20 {
		t.Fatalf("found only %d variables in the configuration structs", len(vars))
	}
	for _, v := range vars {
		t.Run(v.name, func(t *testing.T) {
			want := "`" + v.def + "`"
			if v.def == "" {
				want = "(empty)"
			}
			got, ok := documented[v.name]
			if !ok {
				t.Fatalf("README.md has no row for %s", v.name)
			}
			if got != want {
				t.Fatalf("README.md gives %s the default %s; the code applies %s", v.name, got, want)
			}
		})
	}
}
