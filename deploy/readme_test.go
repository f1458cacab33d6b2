package deploy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// variable is one SLUICE_ variable a service reads, with its default.
type variable struct {
	name, def, service string
}

// structs maps "pkg.Type" to a configuration struct declared in the repository's Go source.
type structs map[string]*ast.StructType

// parseStructs reads the struct types of the packages whose configuration the services embed.
func parseStructs(t *testing.T, root string) structs {
	t.Helper()
	out := structs{}
	dirs := []string{"pkg/service", "pkg/kafka", "pkg/chconn", "pkg/logging", "pkg/demosource", "pkg/config", "pkg/ops"}
	services, _ := filepath.Glob(filepath.Join(root, "services", "*"))
	for _, s := range services {
		dirs = append(dirs, strings.TrimPrefix(s, root+"/"))
	}
	// A service's own types are "main:<service>.Type", apart from the pkg package of the same name.
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(root, dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		qual := filepath.Base(dir)
		if strings.HasPrefix(dir, "services/") {
			qual = "main:" + qual
		}
		fset := token.NewFileSet()
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if ts, ok := n.(*ast.TypeSpec); ok {
					if st, ok := ts.Type.(*ast.StructType); ok {
						out[qual+"."+ts.Name.Name] = st
					}
				}
				return true
			})
		}
	}
	return out
}

// variables walks a configuration struct's env tags the way go-envconfig does, with prefixes.
func (s structs) variables(qual, typeName, prefix string) []variable {
	st := s[qual+"."+typeName]
	if st == nil {
		return nil
	}
	var out []variable
	for _, f := range st.Fields.List {
		tag := ""
		if f.Tag != nil {
			raw, _ := strconv.Unquote(f.Tag.Value)
			tag = reflect.StructTag(raw).Get("env")
		}
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
		if name != "" {
			out = append(out, variable{name: prefix + name, def: def})
			continue
		}
		switch typ := f.Type.(type) {
		case *ast.Ident: // a struct of the same package
			out = append(out, s.variables(qual, typ.Name, nested)...)
		case *ast.SelectorExpr: // pkg.Type
			out = append(out, s.variables(typ.X.(*ast.Ident).Name, typ.Sel.Name, nested)...)
		}
	}
	return out
}

// readmeRow matches a configuration table row: | `SLUICE_X` | `default` or (empty) or text | meaning |.
var readmeRow = regexp.MustCompile("(?m)^\\| `(SLUICE_[A-Z0-9_]+)` \\| ([^|]*) \\|")

// TestReadmeDocumentsEveryVariable checks that the README's configuration reference lists every
// variable each service reads, with the default the code applies.
func TestReadmeDocumentsEveryVariable(t *testing.T) {
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string][]string{} // a variable may have a row in several tables
	for _, m := range readmeRow.FindAllStringSubmatch(string(readme), -1) {
		documented[m[1]] = append(documented[m[1]], strings.Split(strings.TrimSpace(m[2]), ", ")...)
	}

	s := parseStructs(t, root)
	services, _ := filepath.Glob(filepath.Join(root, "services", "*"))
	var vars []variable
	for _, dir := range services {
		name := filepath.Base(dir)
		for _, v := range s.variables("main:"+name, "Config", "SLUICE_") {
			v.service = name
			vars = append(vars, v)
		}
		if name == "sluicectl" {
			vars = append(vars, s.variables("main:"+name, "PlannerConfig", "SLUICE_")...)
		}
	}
	if len(vars) < 60 {
		t.Fatalf("found only %d variables in the services' configuration structs", len(vars))
	}
	for _, v := range vars {
		t.Run(v.service+"/"+v.name, func(t *testing.T) {
			got, ok := documented[v.name]
			if !ok {
				t.Fatalf("README.md has no row for %s", v.name)
			}
			want := "`" + v.def + "`"
			if v.def == "" {
				want = "(empty)"
			}
			// A variable whose default differs per service lists each, like "`:8080` planner".
			if !slices.Contains(got, want) && !slices.Contains(got, want+" "+v.service) {
				t.Fatalf("README.md gives %s the default %v; the %s applies %s", v.name, got, v.service, want)
			}
		})
	}
}
