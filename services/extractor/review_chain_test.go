package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/sluicedata/sluice/pkg/jobspec"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// publishCrawlRated is publishCrawl with a rate limit on the source.
func publishCrawlRated(t *testing.T, brokers []string, url string, pageSize int, rateLimit float64) *kgo.Client {
	t.Helper()
	spec, err := jobspec.Parse([]byte(fmt.Sprintf(`name: crawl
source:
  type: http
  url: %s/cursor/users
  records_path: data
  key: id
  rate_limit: %g
  pagination: {type: cursor, cursor_param: cursor, cursor_path: next_cursor, has_more_path: has_more, page_size: %d}
sink: {table: crawl}
`, url, rateLimit, pageSize)))
	if err != nil {
		t.Fatal(err)
	}
	task, err := proto.Marshal(&sluicev1.Task{JobId: "crawl", TaskId: "crawl-t0000", Source: spec.SourceProto(), Table: "crawl",
		Slice: &sluicev1.Task_Crawl{Crawl: &sluicev1.Crawl{}}})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "sluice.tasks", Key: []byte("crawl-t0000"), Value: task}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return cl
}

// TestReviewCancelledChainLeaksSlot: a rate-limited crawl's next page is read ahead and parks for
// the rate limit (giving its slot back); the job is cancelled before the page runs in process. The
// in-process run skips the cancelled task before ch.take, so nobody cancels or waits for the
// read-ahead goroutine: it later takes a slot again and never gives it back, and asks the source
// for a page of a cancelled job. With one slot, the member then runs no task at all.
func TestReviewCancelledChainLeaksSlot(t *testing.T) { cancelledChain(t, "1000") }

// TestReviewCancelledChainLeaksSlotControl is the same without chains: it passes.
func TestReviewCancelledChainLeaksSlotControl(t *testing.T) { cancelledChain(t, "0") }

func cancelledChain(t *testing.T, chainPages string) {
	const n, pageSize = 1000, 100
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	src := newCrawlSource(t, n)
	logs := startExtractor(t, c.ListenAddrs()[0], map[string]string{"SLUICE_EXTRACTOR_CONCURRENCY": "1", "SLUICE_EXTRACTOR_CHAIN_PAGES": chainPages})
	logs.Await(t, "service started", 30*time.Second)

	raw := holdRaw(t, c, func() bool { return true })
	cl := publishCrawlRated(t, c.ListenAddrs(), src.url, pageSize, 0.25) // a request every 4 s
	raw.awaitHeld(t)                                                     // page 0's records held; page 1 read ahead, parked

	// The job is cancelled while page 0's records are held.
	st, _ := proto.Marshal(&sluicev1.JobState{State: "cancelled"})
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "sluice.jobs", Key: []byte("crawl"), Value: st}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the member's jobs reader applies it
	raw.release()
	logs.Await(t, "skipped a task of a job that ended", 30*time.Second)

	// The parked read-ahead wakes up and fetches page 1 of the cancelled job anyway.
	time.Sleep(5 * time.Second) // past the rate limit's wait: a parked read-ahead wakes
	if len(src.asked()) > 1 {
		t.Errorf("the source was asked for a page of the cancelled job: %v", src.asked())
	}
	t.Logf("source asked for %v after the job was cancelled", src.asked())

	// Another job's task: with the one slot free, it runs.
	publishTask(t, c.ListenAddrs(), src.url, 100, 100)
	evs := followEvents(t, c.ListenAddrs())
	deadline := time.Now().Add(25 * time.Second)
	for time.Now().Before(deadline) {
		if x := evs.next(t).GetTaskExtracted(); x.GetTaskId() == "held-t0000" {
			return
		}
	}
	t.Fatal("another job's task did not run: the member's only slot leaked")
}
