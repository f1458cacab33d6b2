package events

import (
	"testing"
	"time"
)

func TestJobID(t *testing.T) {
	at := time.Date(2024, 3, 1, 12, 30, 45, 999, time.FixedZone("x", 3600))
	for _, name := range []string{"users", "a", "my-job-2", "x-20240301t123045-abcdef"} {
		id := NewJobID(name, at)
		got, planned, ok := ParseJobID(id)
		if !ok || got != name || !planned.Equal(at.Truncate(time.Second)) {
			t.Errorf("ParseJobID(%s) = %q, %v, %v; want %q, %v", id, got, planned, ok, name, at.Truncate(time.Second))
		}
	}
	for _, id := range []string{"", "job", "users-20240301t123045-abcdeg", "users-20241301t123045-abcdef", "-20240301t123045-abcdef", "job-1"} {
		if name, _, ok := ParseJobID(id); ok || name != id {
			t.Errorf("ParseJobID(%q) = %q, %v; want the id whole, not ok", id, name, ok)
		}
	}
}
