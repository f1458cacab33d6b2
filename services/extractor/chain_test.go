package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestCrawlReadsAheadWhileProducing holds the produce request of a crawl's first page's records:
// while they are not acknowledged, the source is asked for the second page (the member reads
// ahead instead of waiting for the page's task to come back from the tasks topic). Once released,
// every page is extracted and committed, and no page is asked for twice.
func TestCrawlReadsAheadWhileProducing(t *testing.T) {
	const n, pageSize = 1000, 100
	c, src, _ := startCrawl(t, n, nil)

	raw := holdRaw(t, c, func() bool { return true })
	cl := publishCrawl(t, c.ListenAddrs(), src.url, pageSize)
	raw.awaitHeld(t)
	src.await(t, 2, "the second page was not asked for while the first page's records were not acknowledged")
	raw.release()

	evs := followEvents(t, c.ListenAddrs())
	for extracted := map[string]bool{}; len(extracted) < n/pageSize; {
		if x := evs.next(t).GetTaskExtracted(); x != nil {
			extracted[x.TaskId] = true
		}
	}
	awaitCommit(t, cl, n/pageSize)
	if again := src.askedAgain(); len(again) > 0 {
		t.Fatalf("pages asked for twice: %v", again)
	}
}

// TestCrawlChainStopsWhenItsPartitionIsLost: mid-crawl, with a page's records held unacknowledged
// at the broker, the member's group session is lost. Nothing is committed past the pages whose
// records are acknowledged; the member's new ownership of the partition resumes from its commit,
// asking again at most for the page being produced and the one read ahead, and the crawl ends with
// every page extracted.
func TestCrawlChainStopsWhenItsPartitionIsLost(t *testing.T) {
	const n, pageSize = 3000, 100
	c, src, logs := startCrawl(t, n, nil)

	raw := holdRaw(t, c, func() bool { return len(src.asked()) >= 6 })
	cl := publishCrawl(t, c.ListenAddrs(), src.url, pageSize)
	raw.awaitHeld(t)

	// The member's next heartbeat is answered as from a member the group does not know: its
	// partitions are lost.
	c.ControlKey(int16(kmsg.Heartbeat), func(req kmsg.Request) (kmsg.Response, error, bool) {
		resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return resp, nil, true
	})
	logs.Await(t, "partitions lost: the group session expired; their tasks stop and nothing of them is committed", 30*time.Second)
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(context.Background(), "sluice.raw")
	if err != nil {
		t.Fatal(err)
	}
	acked, _ := ends.Lookup("sluice.raw", 0)
	at := committed(t, adm) // the task at offset i is page i
	if at*pageSize > acked.Offset {
		t.Fatalf("task offset %d committed with %d records acknowledged: past a page whose records are not", at, acked.Offset)
	}
	raw.release()

	evs := followEvents(t, c.ListenAddrs())
	for extracted := map[string]bool{}; len(extracted) < n/pageSize; {
		if x := evs.next(t).GetTaskExtracted(); x != nil {
			extracted[x.TaskId] = true
		}
	}
	awaitCommit(t, cl, n/pageSize)
	// The new ownership resumed at the commit: the page being produced, then the one read ahead.
	again := src.askedAgain()
	if len(again) > 2 || len(again) > 0 && again[0] != at {
		t.Fatalf("pages %v asked for again after the loss with page %d committed; want at most the page being produced and the one read ahead, from the commit", again, at)
	}
	t.Logf("pages asked again after the loss at page %d: %v", at, again)
}

// crawlSource is the demo source's cursor crawl, which remembers the cursors it was asked for.
type crawlSource struct {
	url string
	mu  sync.Mutex
	// cursors are the requests' cursors in order ("" is the first page); changed closes at the
	// next request.
	cursors []string
	changed chan struct{}
}

func newCrawlSource(t *testing.T, n int) *crawlSource {
	t.Helper()
	cfg := demosource.DefaultConfig()
	cfg.Records = int64(n)
	src, err := demosource.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &crawlSource{changed: make(chan struct{})}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.cursors = append(s.cursors, r.URL.Query().Get("cursor"))
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
		src.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	s.url = ts.URL
	return s
}

func (s *crawlSource) asked() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.cursors)
}

// askedAgain returns the pages asked for more than once, by their place in the crawl.
func (s *crawlSource) askedAgain() []int64 {
	var again []int64
	page := map[string]int64{}
	for _, c := range s.asked() {
		p, seen := page[c]
		if !seen {
			page[c] = int64(len(page))
		} else if !slices.Contains(again, p) {
			again = append(again, p)
		}
	}
	return again
}

// await waits until the source was asked for n pages, at most 10 s.
func (s *crawlSource) await(t *testing.T, n int, why string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		got, changed := len(s.cursors), s.changed
		s.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("%s: %d requests within 10 s", why, got)
		}
	}
}

// heldRaw holds the first produce request to the raw topic made while when() holds.
type heldRaw struct {
	held    chan struct{}
	release func()
}

func holdRaw(t *testing.T, c *kfake.Cluster, when func() bool) *heldRaw {
	t.Helper()
	h := &heldRaw{held: make(chan struct{})}
	gate := make(chan struct{})
	h.release = sync.OnceFunc(func() { close(gate) })
	t.Cleanup(h.release) // before the cluster closes
	info := c.TopicInfo("sluice.raw")
	if info == nil {
		t.Fatal("the extractor made no raw topic")
	}
	var once sync.Once
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		for _, topic := range req.(*kmsg.ProduceRequest).Topics {
			if (topic.Topic == "sluice.raw" || topic.TopicID == info.TopicID) && when() {
				once.Do(func() {
					close(h.held)
					c.SleepControl(func() { <-gate })
				})
			}
		}
		return nil, nil, false
	})
	return h
}

func (h *heldRaw) awaitHeld(t *testing.T) {
	t.Helper()
	select {
	case <-h.held:
	case <-time.After(30 * time.Second):
		t.Fatal("no record produced to the raw topic within 30 s")
	}
}

// startCrawl starts a kfake cluster, a crawl source of n records and an extractor with env added
// to its environment, and returns the cluster, the source and the extractor's log once it has
// started.
func startCrawl(t *testing.T, n int, env map[string]string) (*kfake.Cluster, *crawlSource, *stacktest.LogWriter) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	src := newCrawlSource(t, n)
	logs := startExtractor(t, c.ListenAddrs()[0], env)
	logs.Await(t, "service started", 30*time.Second)
	return c, src, logs
}

// publishCrawl publishes the first page's task of a cursor crawl of the demo source at url.
func publishCrawl(t *testing.T, brokers []string, url string, pageSize int) *kgo.Client {
	t.Helper()
	return publishCrawlRated(t, brokers, url, pageSize, 0)
}

// committed is the extractor group's commit on the tasks topic, 0 when there is none.
func committed(t *testing.T, adm *kadm.Client) int64 {
	t.Helper()
	offs, err := adm.FetchOffsets(context.Background(), "extractor")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offs.Lookup("sluice.tasks", 0); ok {
		return o.At
	}
	return 0
}

// awaitCommit waits until the group committed the tasks topic up to at, at most 30 s.
func awaitCommit(t *testing.T, cl *kgo.Client, at int64) {
	t.Helper()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(30 * time.Second)
	for got := committed(t, adm); got != at; got = committed(t, adm) {
		if time.Now().After(deadline) {
			t.Fatalf("tasks committed up to %d within 30 s, want %d", got, at)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
