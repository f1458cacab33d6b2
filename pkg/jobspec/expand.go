package jobspec

import (
	"errors"
	"fmt"
	"maps"
	pathpkg "path"
	"slices"
	"strings"
)

// VarPrefix starts every variable a header may reference. Whoever submits a job chooses the URL the
// headers go to, so the services must not expand just any variable of their environment (their own
// passwords among them) into it: only those meant for sources.
const VarPrefix = "SOURCE_"

// FilePrefix starts a reference to a file: ${file:/run/secrets/token}, the way Kubernetes and
// Docker mount secrets. The services read such files only under their secret directories.
const FilePrefix = "file:"

var (
	errUnclosed  = fmt.Errorf("%w: unclosed ${", ErrBadReference)
	errBadName   = fmt.Errorf("%w: the name must match [A-Za-z_][A-Za-z0-9_]*, or be file: and an absolute path", ErrBadReference)
	errNotSource = fmt.Errorf("%w: only variables named %s… can be used in headers", ErrBadReference, VarPrefix)
)

// isFileRef reports whether name is file: and a clean absolute path.
func isFileRef(name string) bool {
	path, ok := strings.CutPrefix(name, FilePrefix)
	return ok && strings.HasPrefix(path, "/") && pathpkg.Clean(path) == path && !hasControl(path)
}

// Expand replaces the ${…} references in one value, as ExpandHeaders does; what names the value
// in errors (such as "auth.client_secret").
func Expand(what, value string, lookup func(string) (string, bool)) (string, error) {
	out, missing, err := expand(value, lookup)
	switch {
	case err != nil:
		return "", fmt.Errorf("%s: %w", what, err)
	case len(missing) > 0:
		return "", fmt.Errorf("%s: ${%s}: %w", what, missing[0], ErrMissingVariable)
	case hasControl(out):
		return "", fmt.Errorf("%s: expanded value contains control characters", what)
	}
	return out, nil
}

// References are the names of the ${…} references in value, once each, in order; nil when value
// holds none or a malformed one (which validation refuses).
func References(value string) []string {
	var names []string
	_, _, err := expand(value, func(name string) (string, bool) {
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
		return "", true
	})
	if err != nil {
		return nil
	}
	return names
}

// ExpandHeaders returns a copy of headers in which every ${VAR} reference in a value is replaced by
// lookup(VAR); the extractor passes os.LookupEnv, so secrets stay in its environment and never travel
// through the spec or Kafka. Only the braced form is a reference: "$VAR" stays literal, and "$${VAR}"
// is a literal "$" followed by the reference ${VAR} (there is no escape). A variable that is set but
// empty expands to "".
//
// The error names every header and variable that could not be expanded (wrapping ErrMissingVariable
// or ErrBadReference), never a value.
func ExpandHeaders(headers map[string]string, lookup func(string) (string, bool)) (map[string]string, error) {
	out := make(map[string]string, len(headers))
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(headers)) {
		value, missing, err := expand(headers[name], lookup)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("header %s: %w", name, err))
		case len(missing) > 0:
			for _, v := range missing {
				errs = append(errs, fmt.Errorf("header %s: ${%s}: %w", name, v, ErrMissingVariable))
			}
		case hasControl(value):
			errs = append(errs, fmt.Errorf("header %s: expanded value contains control characters", name))
		}
		out[name] = value
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// expand replaces the ${VAR} references in value. It returns the names lookup did not find, once
// each, or an error wrapping ErrBadReference for a malformed reference.
func expand(value string, lookup func(string) (string, bool)) (string, []string, error) {
	var b strings.Builder
	var missing []string
	for {
		before, after, found := strings.Cut(value, "${")
		b.WriteString(before)
		if !found {
			return b.String(), missing, nil
		}
		name, rest, closed := strings.Cut(after, "}")
		if !closed {
			return "", nil, errUnclosed
		}
		switch {
		case isFileRef(name):
		case !isVarName(name):
			return "", nil, errBadName
		case !strings.HasPrefix(name, VarPrefix):
			return "", nil, errNotSource
		}
		v, ok := lookup(name)
		if !ok && !slices.Contains(missing, name) {
			missing = append(missing, name)
		}
		b.WriteString(v)
		value = rest
	}
}

// isVarName reports whether s matches [A-Za-z_][A-Za-z0-9_]*.
func isVarName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range []byte(s) {
		letter := c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
		digit := '0' <= c && c <= '9'
		if !letter && (i == 0 || !digit) {
			return false
		}
	}
	return true
}

// hasControl reports whether s holds a control character other than tab, which no header value may
// contain (a CR or LF would split the request).
func hasControl(s string) bool {
	for _, c := range []byte(s) {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return true
		}
	}
	return false
}
