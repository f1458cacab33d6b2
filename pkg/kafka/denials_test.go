package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

// TestDenials fails readiness while the brokers refuse the client's rights, with what to fix, and
// passes again 30 s after the last refusal; other errors do not count.
func TestDenials(t *testing.T) {
	cfg := valid()
	cfg.SASL = SASL{Mechanism: "SCRAM-SHA-512", Username: "sluice-loader", Password: "p"}
	d := NewDenials(cfg)
	now := time.Now()
	d.now = func() time.Time { return now }
	if d.Observe(errors.New("connection refused")) || d.Ready(context.Background()) != nil {
		t.Fatal("an unreachable broker counted as a refusal")
	}
	if !d.Observe(fmt.Errorf("fetch: %w", kerr.TopicAuthorizationFailed)) {
		t.Fatal("a denied topic was not taken")
	}
	if err := d.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "User:sluice-loader") {
		t.Fatalf("ready while denied: %v", err)
	}
	now = now.Add(31 * time.Second)
	if err := d.Ready(context.Background()); err != nil {
		t.Fatalf("still failing 31 s after the last refusal: %v", err)
	}
}
