package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/chsink"
)

// TestSinkClusterChecked refuses, before asking ClickHouse, a job whose sink.cluster is not the
// cluster this deployment writes, saying what it writes.
func TestSinkClusterChecked(t *testing.T) {
	for _, c := range []struct {
		deployment, job string
		want            string // "" for accepted
	}{
		{"", "sluice", "this deployment writes one server"},
		{"sluice", "other", "this deployment writes cluster sluice"},
	} {
		// An address nothing answers at: a refusal must not need the server.
		s := newSinkTables(chconn.Config{Addr: []string{"127.0.0.1:1"}, Cluster: c.deployment}, slog.New(slog.DiscardHandler))
		err := s.Check(context.Background(), "t", nil, chsink.Claim{Job: "j", Cluster: c.job})
		if !errors.Is(err, chsink.ErrIncompatibleTable) || !refusedTable(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("deployment %q, sink.cluster %q: %v, want a refusal saying %q", c.deployment, c.job, err, c.want)
		}
	}
}
