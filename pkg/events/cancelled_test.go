package events

import (
	"log/slog"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// TestCancelledKnowsTheJobsThatEndedEarly: the tasks of a cancelled job, and of a job the planner
// failed before its tasks all ended (a stall), are skipped; those of a running job, of one that
// succeeded, or of one that failed once every task ended, are not; a later state or a tombstone
// replaces an earlier one.
func TestCancelledKnowsTheJobsThatEndedEarly(t *testing.T) {
	for _, tt := range []struct {
		name  string
		state *sluicev1.JobState // nil: a tombstone
		skip  bool
	}{
		{"cancelled", &sluicev1.JobState{State: "cancelled", TasksPlanned: 4}, true},
		{"failed with tasks left", &sluicev1.JobState{State: "failed", TasksPlanned: 4, TasksExtracted: 1, TasksDeadLettered: 1}, true},
		{"failed once every task ended", &sluicev1.JobState{State: "failed", TasksPlanned: 4, TasksExtracted: 3, TasksDeadLettered: 1}, false},
		{"succeeded", &sluicev1.JobState{State: "succeeded", TasksPlanned: 4, TasksExtracted: 4}, false},
		{"running", &sluicev1.JobState{State: "running", TasksPlanned: 4}, false},
		{"tombstone", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCancelled()
			put := func(st *sluicev1.JobState) {
				var value []byte
				if st != nil {
					var err error
					if value, err = proto.Marshal(st); err != nil {
						t.Fatal(err)
					}
				}
				c.apply(&kgo.Record{Key: []byte("j"), Value: value}, slog.New(slog.DiscardHandler))
			}
			put(&sluicev1.JobState{State: "cancelled"}) // an earlier state, replaced
			put(tt.state)
			if c.Is("j") != tt.skip {
				t.Fatalf("skipped: %v, want %v", c.Is("j"), tt.skip)
			}
		})
	}
}
