package pipeline

import (
	"testing"
	"time"
)

func TestBackoffDelayIsFullJitterUnderTheCeiling(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	tests := []struct {
		attempt int
		ceiling time.Duration
	}{
		{0, 100 * time.Millisecond},
		{1, 200 * time.Millisecond},
		{3, 800 * time.Millisecond},
		{4, time.Second},
		{63, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.ceiling.String(), func(t *testing.T) {
			var most time.Duration
			for range 2000 {
				d := b.Delay(tt.attempt)
				if d < 0 || d >= tt.ceiling {
					t.Fatalf("Delay(%d) = %s, want in [0, %s)", tt.attempt, d, tt.ceiling)
				}
				most = max(most, d)
			}
			if most < tt.ceiling/2 {
				t.Fatalf("Delay(%d) never above %s in 2000 draws: not jittered over the whole range", tt.attempt, most)
			}
		})
	}
}
