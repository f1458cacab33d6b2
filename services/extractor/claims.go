package main

import (
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/sluicedata/sluice/pkg/dlq"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// maxDone is how many finished task ids a member remembers.
const maxDone = 10_000

// claims are the tasks this member works on or finished lately, by id. A copy of one of them is
// not run again: a crawl's page whose task ran twice (its member died after publishing the next
// page and before committing) publishes the next page twice, and running both would fetch every
// page after it twice.
//
// A task at work counts only within its partition's ownership: the copy is later on the same
// partition, so the commit stops at the original until it ends, and if the ownership ends both
// come back. A run of an earlier ownership that has not returned yet (its partition was lost and
// came back) claims nothing: the task runs again.
type claims struct {
	mu      sync.Mutex
	working map[claim]bool
	done    map[string]bool
	order   []string // done ids, oldest first
}

// claim is a task id at work in one ownership of its partition.
type claim struct {
	o  *owner
	id string
}

func newClaims() *claims { return &claims{working: map[claim]bool{}, done: map[string]bool{}} }

// claim takes id for o; false when it is at work in o already, or done.
func (c *claims) claim(o *owner, id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.working[claim{o, id}] || c.done[id] {
		return false
	}
	c.working[claim{o, id}] = true
	return true
}

// release ends o's claim of id: done, it is remembered; abandoned, it may run again.
func (c *claims) release(o *owner, id string, done bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.working, claim{o, id})
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

// taskID is the id of the task at r, "" when it does not decode (its run dead-letters it). A task
// replayed from its dead letter is another claim than the run that dead-lettered it: the id of
// the letter it replays goes with it.
func taskID(r *kgo.Record) string {
	var t sluicev1.Task
	if proto.Unmarshal(r.Value, &t) != nil {
		return ""
	}
	for _, h := range r.Headers {
		if h.Key == dlq.HeaderReplayOf {
			return t.TaskId + " replaying " + string(h.Value)
		}
	}
	return t.TaskId
}
