package source

import (
	"testing"
	"time"
)

// TestCursorRule takes the values a mark can go on from, and rejects text that is no cursor, a value
// of the other kind, and a time past now plus the skew.
func TestCursorRule(t *testing.T) {
	now := time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)
	day := CursorRule{Kind: KindTime, MaxSkew: 24 * time.Hour}
	for _, c := range []struct {
		rule  CursorRule
		value string
		want  string
	}{
		{day, "2024-06-01T12:00:00Z", ""},
		{day, "2024-06-02T12:00:00Z", ""}, // at the skew's end
		{day, "2024-06-02T12:00:00.000000001Z", RejectFuture},
		{day, "2099-01-01T00:00:00Z", RejectFuture},
		{day, "2024-06-03T00:00:00+14:00", ""}, // 2024-06-02T10:00Z
		{day, "2024-06-02T13:00:00", RejectFuture},
		{day, "2024-06-03", RejectFuture},
		{day, "N/A", RejectUnparseable},
		{day, "1717243200", RejectUnparseable}, // a number where the job's cursor is a time
		{day, "infinity", RejectUnparseable},
		{CursorRule{Kind: KindTime}, "2099-01-01T00:00:00Z", ""}, // no skew said: no bound
		{CursorRule{Kind: KindNumber, MaxSkew: time.Hour}, "99999999999999999999999", ""},
		{CursorRule{Kind: KindNumber}, "-12.5", ""},
		{CursorRule{Kind: KindNumber}, "1.7e9", ""},
		{CursorRule{Kind: KindNumber}, "Inf", RejectUnparseable},
		{CursorRule{Kind: KindNumber}, "0x10", RejectUnparseable},
		{CursorRule{Kind: KindNumber}, "1_000", RejectUnparseable},
		{CursorRule{Kind: KindNumber}, "2024-01-01", RejectUnparseable},
		{CursorRule{MaxSkew: time.Hour}, "42", ""},
		{CursorRule{MaxSkew: time.Hour}, "2024-06-01T12:30:00Z", ""},
		{CursorRule{MaxSkew: time.Hour}, "2024-06-01T13:30:00Z", RejectFuture},
		{CursorRule{MaxSkew: time.Hour}, "", RejectUnparseable},
	} {
		if got := c.rule.Check(c.value, now); got != c.want {
			t.Errorf("%+v.Check(%q) = %q, want %q", c.rule, c.value, got, c.want)
		}
	}
}

// TestMaxCursorLeavesOutRejected keeps the largest value the rule takes and counts the others: one
// record stamped decades ahead does not hide the run's real largest cursor.
func TestMaxCursorLeavesOutRejected(t *testing.T) {
	now := time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)
	m := MaxCursor{Rule: CursorRule{Kind: KindTime, MaxSkew: time.Hour}}
	for _, v := range []string{"2024-05-01T00:00:00Z", "2099-01-01T00:00:00Z", "N/A", "2024-05-31T00:00:00Z", "zzz", "2024-05-02T00:00:00Z"} {
		m.Add(v, now)
	}
	if m.Value() != "2024-05-31T00:00:00Z" || m.Rejected != (Rejected{Unparseable: 2, Future: 1}) {
		t.Fatalf("max %q, rejected %+v; want 2024-05-31T00:00:00Z, 2 unparseable and 1 future", m.Value(), m.Rejected)
	}
}

// TestRunKind tells a run's kind of cursor from its mark, else its initial value, else its lookback.
func TestRunKind(t *testing.T) {
	for _, c := range []struct{ mark, initial, lookback, want string }{
		{"2024-01-01T00:00:00Z", "5", "5", KindTime},
		{"", "1000", "10m", KindNumber},
		{"", "", "10m", KindTime},
		{"", "", "25", KindNumber},
		{"", "", "0", ""},
		{"", "", "", ""},
		{"N/A", "", "", ""},
	} {
		if got := RunKind(c.mark, c.initial, c.lookback); got != c.want {
			t.Errorf("RunKind(%q, %q, %q) = %q, want %q", c.mark, c.initial, c.lookback, got, c.want)
		}
	}
}
