package jobspec_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/sluicedata/sluice/pkg/jobspec"
)

func lookupIn(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

func TestExpandHeaders(t *testing.T) {
	env := map[string]string{"SOURCE_TOKEN": "s3cret", "SOURCE_USER": "alice", "SOURCE_PASS": "hunter2", "SOURCE_EMPTY": ""}
	tests := []struct {
		name    string
		headers map[string]string
		want    map[string]string
	}{
		{
			name:    "present",
			headers: map[string]string{"Authorization": "Bearer ${SOURCE_TOKEN}", "Accept": "application/json"},
			want:    map[string]string{"Authorization": "Bearer s3cret", "Accept": "application/json"},
		},
		{
			name:    "several references in one value",
			headers: map[string]string{"X-Login": "${SOURCE_USER}:${SOURCE_PASS}@${SOURCE_USER}"},
			want:    map[string]string{"X-Login": "alice:hunter2@alice"},
		},
		{
			name:    "literal dollars",
			headers: map[string]string{"X-Literal": "$TOKEN $ {TOKEN} $5 $", "X-Double": "$${SOURCE_TOKEN}"},
			want:    map[string]string{"X-Literal": "$TOKEN $ {TOKEN} $5 $", "X-Double": "$s3cret"},
		},
		{
			name:    "set but empty",
			headers: map[string]string{"X-Empty": "[${SOURCE_EMPTY}]"},
			want:    map[string]string{"X-Empty": "[]"},
		},
		{
			name:    "no headers",
			headers: nil,
			want:    map[string]string{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := jobspec.ExpandHeaders(tc.headers, lookupIn(env))
			if err != nil {
				t.Fatalf("ExpandHeaders: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ExpandHeaders = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestExpandHeadersErrors(t *testing.T) {
	env := map[string]string{"SOURCE_TOKEN": "s3cret", "SLUICE_CLICKHOUSE_PASSWORD": "hunter2"}
	tests := []struct {
		name    string
		headers map[string]string
		want    string
		is      error
	}{
		{
			name:    "missing",
			headers: map[string]string{"Authorization": "Bearer ${SOURCE_TOKN}"},
			want:    "header Authorization: ${SOURCE_TOKN}: variable not set",
			is:      jobspec.ErrMissingVariable,
		},
		{
			name:    "a variable not meant for sources",
			headers: map[string]string{"Authorization": "Bearer ${SLUICE_CLICKHOUSE_PASSWORD}"},
			want:    "header Authorization: malformed ${VAR} reference: only variables named SOURCE_… can be used in headers",
			is:      jobspec.ErrBadReference,
		},
		{
			name: "every missing variable of every header",
			headers: map[string]string{
				"X-B": "${SOURCE_USER}:${SOURCE_PASS}:${SOURCE_USER}:${SOURCE_TOKEN}",
				"X-A": "Bearer ${SOURCE_NOPE}",
				"X-C": "fine ${SOURCE_TOKEN}",
			},
			want: "header X-A: ${SOURCE_NOPE}: variable not set\n" +
				"header X-B: ${SOURCE_USER}: variable not set\n" +
				"header X-B: ${SOURCE_PASS}: variable not set",
			is: jobspec.ErrMissingVariable,
		},
		{
			name:    "unclosed",
			headers: map[string]string{"Authorization": "Bearer ${TOKEN"},
			want:    "header Authorization: malformed ${VAR} reference: unclosed ${",
			is:      jobspec.ErrBadReference,
		},
		{
			name:    "bad name",
			headers: map[string]string{"Authorization": "Bearer ${TO-KEN}"},
			want:    "header Authorization: malformed ${VAR} reference: the name must match [A-Za-z_][A-Za-z0-9_]*, or be file: and an absolute path",
			is:      jobspec.ErrBadReference,
		},
		{
			name:    "empty name",
			headers: map[string]string{"Authorization": "Bearer ${}"},
			want:    "header Authorization: malformed ${VAR} reference: the name must match [A-Za-z_][A-Za-z0-9_]*, or be file: and an absolute path",
			is:      jobspec.ErrBadReference,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := jobspec.ExpandHeaders(tc.headers, lookupIn(env))
			if err == nil {
				t.Fatalf("ExpandHeaders = %q, want an error", got)
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n%s\nwant\n%s", err, tc.want)
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.is)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q holds a value", err)
			}
		})
	}
}

func TestExpandHeadersRejectsControlCharacters(t *testing.T) {
	env := map[string]string{"SOURCE_TOKEN": "s3cret", "SOURCE_BROKEN": "ok\r\nX-Injected: 1"}
	headers := map[string]string{"X-Value": "${SOURCE_BROKEN}", "Authorization": "${SOURCE_TOKEN}"}
	_, err := jobspec.ExpandHeaders(headers, lookupIn(env))
	want := "header X-Value: expanded value contains control characters"
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}
