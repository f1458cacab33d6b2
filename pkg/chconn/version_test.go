package chconn

import "testing"

func TestFeaturesOf(t *testing.T) {
	tests := []struct {
		version Version
		want    Features
	}{
		{Version{18, 16, 1}, Features{}},
		{Version{19, 3, 0}, Features{LowCardinality: true}},
		{Version{20, 1, 2}, Features{LowCardinality: true, DateTime64: true}},
		{Version{20, 10, 3}, Features{LowCardinality: true, DateTime64: true, NonReplicatedDeduplication: true}},
		{Version{21, 11, 0}, Features{LowCardinality: true, DateTime64: true, NonReplicatedDeduplication: true, AsyncInsert: true}},
		{Version{21, 12, 2}, Features{LowCardinality: true, DateTime64: true, NonReplicatedDeduplication: true, AsyncInsert: true, Bool: true}},
		{Version{22, 2, 1}, Features{true, true, true, true, true, true}},
		{Version{25, 8, 0}, Features{true, true, true, true, true, true}},
	}
	for _, tt := range tests {
		t.Run(tt.version.String(), func(t *testing.T) {
			if got := FeaturesOf(tt.version); got != tt.want {
				t.Fatalf("FeaturesOf(%s) = %+v, want %+v", tt.version, got, tt.want)
			}
		})
	}
}
