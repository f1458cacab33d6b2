package events

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// jobIDTime is the layout of the time in a job id.
const jobIDTime = "20060102t150405"

// NewJobID names a job after its spec's name and the time it was planned, with a random suffix:
// "users-20240301t123045-a1b2c3". Job ids are unique per submission; task ids derive from them.
func NewJobID(name string, planned time.Time) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%s-%s", name, planned.UTC().Format(jobIDTime), hex.EncodeToString(b))
}

// ParseJobID returns the name of the job and when it was planned (to the second) from an id that
// NewJobID made; ok is false for another id, whose name is then the id whole.
func ParseJobID(id string) (name string, planned time.Time, ok bool) {
	// name, '-', the time (15 characters), '-', six hex digits.
	const tail = 1 + len(jobIDTime) + 1 + 6
	if len(id) <= tail || id[len(id)-tail] != '-' || id[len(id)-7] != '-' {
		return id, time.Time{}, false
	}
	if _, err := hex.DecodeString(id[len(id)-6:]); err != nil {
		return id, time.Time{}, false
	}
	at, err := time.Parse(jobIDTime, id[len(id)-tail+1:len(id)-7])
	if err != nil {
		return id, time.Time{}, false
	}
	return id[:len(id)-tail], at, true
}
