package main

import (
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// maxDone is how many finished task ids a member remembers.
const maxDone = 10_000

// claims are the tasks this member works on or finished lately, by id. A copy of one of them is
// not run again: a crawl's page whose task ran twice (its member died after publishing the next
// page and before committing) publishes the next page twice, and running both would fetch every
// page after it twice.
type claims struct {
	mu      sync.Mutex
	working map[string]bool
	done    map[string]bool
	order   []string // done ids, oldest first
}

func newClaims() *claims { return &claims{working: map[string]bool{}, done: map[string]bool{}} }

// claim takes id for this member; false when it is already at work here or done.
func (c *claims) claim(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.working[id] || c.done[id] {
		return false
	}
	c.working[id] = true
	return true
}

// release ends the claim of id: done, it is remembered; abandoned, it may run again.
func (c *claims) release(id string, done bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.working, id)
	if !done || c.done[id] {
		return
	}
	c.done[id] = true
	c.order = append(c.order, id)
	if len(c.order) > maxDone {
		delete(c.done, c.order[0])
		c.order = c.order[1:]
	}
}

// taskID is the id of the task at r, "" when it does not decode (its run dead-letters it).
func taskID(r *kgo.Record) string {
	var t sluicev1.Task
	if proto.Unmarshal(r.Value, &t) != nil {
		return ""
	}
	return t.TaskId
}
