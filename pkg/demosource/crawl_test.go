package demosource_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"testing"

	"github.com/sluicedata/sluice/pkg/demosource"
)

// crawl follows one crawl endpoint from its first page to its end and returns the ids of the
// records, in order, and the next positions it was given.
func crawl(t *testing.T, ts *httptest.Server, path string, maxPages int) (ids []int64, positions []string) {
	t.Helper()
	next := ts.URL + path + "?limit=7"
	linkNext := regexp.MustCompile(`<([^>]+)>; rel="next"`)
	for range maxPages {
		resp, err := http.Get(next)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Data       []struct{ ID int64 }
			NextCursor *string `json:"next_cursor"`
			HasMore    bool    `json:"has_more"`
			Links      struct{ Next *string }
		}
		var arr []struct{ ID int64 }
		dec := json.NewDecoder(resp.Body)
		if path[:5] == "/link" {
			err = dec.Decode(&arr)
			body.Data = arr
		} else {
			err = dec.Decode(&body)
		}
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d, %v", next, resp.StatusCode, err)
		}
		for _, r := range body.Data {
			ids = append(ids, r.ID)
		}
		var pos string
		switch path[:5] {
		case "/curs":
			if body.NextCursor == nil || !body.HasMore {
				return ids, positions
			}
			pos = *body.NextCursor
			next = ts.URL + path + "?limit=7&cursor=" + url.QueryEscape(pos)
		case "/next":
			if body.Links.Next == nil {
				return ids, positions
			}
			pos = *body.Links.Next
			next = ts.URL + pos
		default:
			m := linkNext.FindStringSubmatch(resp.Header.Get("Link"))
			if m == nil {
				return ids, positions
			}
			pos = m[1]
			next = pos
		}
		positions = append(positions, pos)
	}
	return ids, positions
}

// TestCrawlEndpoints reads every record once through each crawl style; the cursor faults repeat a
// position.
func TestCrawlEndpoints(t *testing.T) {
	for _, path := range []string{"/cursor/users", "/next/users", "/link/users"} {
		t.Run(path, func(t *testing.T) {
			ts := httptest.NewServer(newServer(t, testConfig(50)).Handler())
			defer ts.Close()
			ids, _ := crawl(t, ts, path, 100)
			if len(ids) != 50 {
				t.Fatalf("%d records, want 50", len(ids))
			}
			for i, id := range ids {
				if id != int64(i) {
					t.Fatalf("record %d has id %d", i, id)
				}
			}
		})
		for _, fault := range []string{"stuck", "loop"} {
			t.Run(path+" "+fault, func(t *testing.T) {
				cfg := testConfig(50)
				cfg.CursorFault, cfg.CursorFaultAt = fault, 20
				ts := httptest.NewServer(newServer(t, cfg).Handler())
				defer ts.Close()
				_, positions := crawl(t, ts, path, 12)
				seen := map[string]bool{}
				repeated := false
				for _, p := range positions {
					repeated = repeated || seen[p]
					seen[p] = true
				}
				if !repeated || len(positions) != 12 {
					t.Fatalf("%d positions %q: want a crawl that never ends and repeats", len(positions), positions)
				}
			})
		}
	}
	if _, err := demosource.New(demosource.Config{Records: 1, RecordSize: 1, MaxLimit: 1, RetryAfter: 1, Burst5xx: 1, CursorFault: "spin"}, nil); err == nil {
		t.Fatal("an unknown cursor fault was taken")
	}
}
