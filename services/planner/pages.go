package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
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
