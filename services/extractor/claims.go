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
// page after it twice; and a crawl's page that this member went on to in process (a chain) comes
// back from the tasks topic as a copy.
//
// A task at work counts only within its partition's ownership: the copy is later on the same
// partition, and it is done only once the work is (its offset is held until then: a page run in
// process has no offset of its own), abandoned if the work is. If the ownership ends both come
// back. A run of an earlier ownership that has not returned yet (its partition was lost and came
// back) claims nothing: the task runs again.
type claims struct {
	mu sync.Mutex
	// working are the claims at work, each with what its copies do once it ends.
	working map[claim][]func(released)
	done    map[string]bool
	order   []string // done ids, oldest first
}

// claim is a task id at work in one ownership of its partition.
type claim struct {
	o  *owner
	id string
}

// released is how the work on a claim ended, which decides what its waiting copies do.
type released int

const (
	// finished: the task is done; its copies are done with it.
	finished released = iota
	// handedOver: the member let the task go with its partition (a revocation, a shutdown) or
	// stops; its copies are handed over too, for the next owner.
	handedOver
	// givenUp: the member let the task go and goes on owning its partition (a chain that does
	// not go on); a copy that waits runs the task itself.
	givenUp
)

func newClaims() *claims {
	return &claims{working: map[claim][]func(released){}, done: map[string]bool{}}
}

// claim takes id for o, and returns true. When id is at work in o already, or done, it returns false
// and copied (when not nil) runs once the work ends (at once when it is done), with how it ended.
func (c *claims) claim(o *owner, id string, copied func(released)) bool {
	c.mu.Lock()
	k := claim{o, id}
	if waiting, ok := c.working[k]; ok {
		if copied != nil {
			c.working[k] = append(waiting, copied)
		}
		c.mu.Unlock()
		return false
	}
	if c.done[id] {
		c.mu.Unlock()
		if copied != nil {
			copied(finished)
		}
		return false
	}
	c.working[k] = nil
	c.mu.Unlock()
	return true
}

// release ends o's claim of id: finished, it is remembered; otherwise it may run again. The copies
// that waited for it are told how it ended.
func (c *claims) release(o *owner, id string, how released) {
	c.mu.Lock()
	k := claim{o, id}
	waiting := c.working[k]
	delete(c.working, k)
	if how == finished && !c.done[id] {
		c.done[id] = true
		c.order = append(c.order, id)
		if len(c.order) > maxDone {
			delete(c.done, c.order[0])
			c.order = c.order[1:]
		}
	}
	c.mu.Unlock()
	for _, copied := range waiting {
		copied(how)
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
