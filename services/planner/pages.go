package main

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The API's lists (jobs, a job's tasks, dead letters) come in pages: at most limit items, and a
// cursor for the page after. A cursor names the last item served rather than a position, so that
// items that arrive or go between two requests shift nothing: no item is served twice and none
// that stays is left out.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// Lists whose cursors are told apart: a cursor is good only for the list that made it.
const (
	listJobs    = "jobs"
	listTasks   = "tasks"
	listLetters = "letters"
)

// errCursor is a cursor that no page of this list gave.
var errCursor = errors.New("cursor is not one that this list gave: ask again without it, from the first page")

// pageQuery is the page a request asks for: at most limit items after the one after names ("": from
// the first).
type pageQuery struct {
	limit int
	after string
}

// parsePage reads limit and cursor from q for list.
func parsePage(q url.Values, list string) (pageQuery, error) {
	pq := pageQuery{limit: defaultLimit}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return pq, fmt.Errorf("limit must be an integer from 1 to %d", maxLimit)
		}
		pq.limit = n
	}
	if c := q.Get("cursor"); c != "" {
		raw, err := base64.RawURLEncoding.DecodeString(c)
		after, ok := strings.CutPrefix(string(raw), list+":")
		if err != nil || !ok || after == "" {
			return pq, errCursor
		}
		pq.after = after
	}
	return pq, nil
}

// cursor is the opaque cursor of list after the item whose key is after.
func cursor(list, after string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(list + ":" + after))
}

// cut returns the page of sorted that starts at the first item follows says comes after the cursor,
// and whether items remain after it.
func cut[T any](sorted []T, limit int, follows func(T) bool) ([]T, bool) {
	i := sort.Search(len(sorted), func(i int) bool { return follows(sorted[i]) })
	end := min(i+limit, len(sorted))
	return sorted[i:end], end < len(sorted)
}

// Page returns at most limit jobs, newest first, from the first after the job after names (nil:
// from the newest), with their counts at now, and whether more follow.
func (js *Jobs) Page(after *jobKey, limit int, now time.Time) ([]Job, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	sorted := make([]*Job, 0, len(js.jobs))
	for _, j := range js.jobs {
		sorted = append(sorted, j)
	}
	slices.SortFunc(sorted, func(a, b *Job) int { return a.key().compare(b.key()) })
	page, more := cut(sorted, limit, func(j *Job) bool { return after == nil || after.compare(j.key()) < 0 })
	out := make([]Job, len(page))
	for i, j := range page {
		out[i] = j.view(now)
	}
	return out, more
}

// jobKey orders the jobs as the API lists them: newest first, by creation time and then by id.
type jobKey struct {
	created time.Time
	id      string
}

func (j *Job) key() jobKey { return jobKey{created: j.CreatedAt, id: j.ID} }

// compare is negative when k comes before o in the list.
func (k jobKey) compare(o jobKey) int {
	return cmp.Or(o.created.Compare(k.created), strings.Compare(o.id, k.id))
}

func (k jobKey) String() string { return k.created.Format(time.RFC3339Nano) + "/" + k.id }

func parseJobKey(s string) (jobKey, error) {
	at, id, _ := strings.Cut(s, "/")
	created, err := time.Parse(time.RFC3339Nano, at)
	if err != nil || id == "" {
		return jobKey{}, errCursor
	}
	return jobKey{created: created, id: id}, nil
}

// taskKey orders a job's tasks: the planned ones by index, then the others (those that other
// tasks' ends published) by id.
type taskKey struct {
	later bool
	index int
	id    string
}

// compare is negative when k comes before o.
func (k taskKey) compare(o taskKey) int {
	switch {
	case k.later != o.later && k.later:
		return 1
	case k.later != o.later:
		return -1
	case k.later:
		return strings.Compare(k.id, o.id)
	}
	return cmp.Compare(k.index, o.index)
}

func (k taskKey) String() string {
	if k.later {
		return "l/" + k.id
	}
	return "p/" + strconv.Itoa(k.index)
}

func parseTaskKey(s string) (taskKey, error) {
	kind, v, _ := strings.Cut(s, "/")
	switch n, err := strconv.Atoi(v); {
	case kind == "p" && err == nil && n >= 0:
		return taskKey{index: n}, nil
	case kind == "l" && v != "":
		return taskKey{later: true, id: v}, nil
	}
	return taskKey{}, errCursor
}
