package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// publishCrawlRated is publishCrawl with a rate limit on the source (none when 0).
func publishCrawlRated(t *testing.T, brokers []string, url string, pageSize int, rateLimit float64) *kgo.Client {
	t.Helper()
	limit := ""
	if rateLimit > 0 {
		limit = fmt.Sprintf("\n  rate_limit: %g", rateLimit)
	}
	return publish(t, brokers, fmt.Sprintf(`name: crawl
source:
  type: http
  url: %s/cursor/users
  records_path: data
  key: id%s
  pagination: {type: cursor, cursor_param: cursor, cursor_path: next_cursor, has_more_path: has_more, page_size: %d}
sink: {table: crawl}
`, url, limit, pageSize), []byte("crawl-t0000"), &sluicev1.Task{JobId: "crawl", TaskId: "crawl-t0000", Table: "crawl",
		Slice: &sluicev1.Task_Crawl{Crawl: &sluicev1.Crawl{}}})
}

// TestCancelledChainFreesItsSlot: a rate-limited crawl's next page is claimed for the chain while
// the rate limit holds its request back, and the job is cancelled before the page runs in process.
// The in-process run skips the cancelled task: the page read ahead is given up with it, the source
// is asked for no page of the cancelled job, and the member's one slot is free for the next task.
func TestCancelledChainFreesItsSlot(t *testing.T) { cancelledChain(t, "1000") }

// TestCancelledCrawlFreesItsSlot is the same without chains.
func TestCancelledCrawlFreesItsSlot(t *testing.T) { cancelledChain(t, "0") }

func cancelledChain(t *testing.T, chainPages string) {
	const n, pageSize = 1000, 100
	c, src, logs := startCrawl(t, n, map[string]string{"SLUICE_EXTRACTOR_CONCURRENCY": "1", "SLUICE_EXTRACTOR_CHAIN_PAGES": chainPages})

	raw := holdRaw(t, c, func() bool { return true })
	cl := publishCrawlRated(t, c.ListenAddrs(), src.url, pageSize, 0.25) // a request every 4 s
	raw.awaitHeld(t)                                                     // page 0's records held; page 1 claimed, its request held back

	// The job is cancelled while page 0's records are held.
	st, _ := proto.Marshal(&sluicev1.JobState{State: "cancelled"})
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "sluice.jobs", Key: []byte("crawl"), Value: st}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the member's jobs reader applies it
	raw.release()
	logs.Await(t, "skipped a task of a job that ended", 30*time.Second)

	// Another job's task, from another source: with the one slot free, it runs.
	other := newCrawlSource(t, 100)
	publishTask(t, c.ListenAddrs(), other.url, 100, 100)
	evs := followEvents(t, c.ListenAddrs())
	deadline := time.Now().Add(25 * time.Second)
	for time.Now().Before(deadline) {
		if x := evs.next(t).GetTaskExtracted(); x.GetTaskId() == "held-t0000" {
			if asked := src.asked(); len(asked) > 1 {
				t.Fatalf("the source was asked for a page of the cancelled job: %v", asked)
			}
			return
		}
	}
	t.Fatal("another job's task did not run: the member's only slot leaked")
}
