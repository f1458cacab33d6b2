package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/jobspec"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// TestJobCapHoldsWithChains: two crawls of one job capped at concurrency 1. The source sees at most
// one request of the job at a time, with chains as without: the page read ahead runs under the
// cap slot of the page before, which passes it on to the page's run in process.
func TestJobCapHoldsWithChains(t *testing.T) {
	for _, pages := range []string{"0", "1000"} {
		t.Run("chain_pages="+pages, func(t *testing.T) { jobCap(t, pages) })
	}
}

func jobCap(t *testing.T, chainPages string) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := demosource.DefaultConfig()
	cfg.Records = 1000
	demo, err := demosource.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	inFlight, most, total := 0, 0, 0
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		total++
		most = max(most, inFlight)
		mu.Unlock()
		time.Sleep(150 * time.Millisecond)
		demo.Handler().ServeHTTP(w, r)
		mu.Lock()
		inFlight--
		mu.Unlock()
	}))
	defer ts.Close()
	logs := startExtractor(t, c.ListenAddrs()[0], map[string]string{"SLUICE_EXTRACTOR_CHAIN_PAGES": chainPages})
	logs.Await(t, "service started", 30*time.Second)

	spec, err := jobspec.Parse([]byte(fmt.Sprintf(`name: capped
source:
  type: http
  url: %s/cursor/users
  records_path: data
  key: id
  concurrency: 1
  pagination: {type: cursor, cursor_param: cursor, cursor_path: next_cursor, has_more_path: has_more, page_size: 100}
sink: {table: capped}
`, ts.URL)))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, id := range []string{"capped-a", "capped-b"} {
		task, _ := proto.Marshal(&sluicev1.Task{JobId: "capped", TaskId: id, Source: spec.SourceProto(), Table: "capped",
			Slice: &sluicev1.Task_Crawl{Crawl: &sluicev1.Crawl{}}})
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "sluice.tasks", Key: []byte(id), Value: task}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := total
		mu.Unlock()
		if n >= 16 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if most > 1 {
		t.Fatalf("%d requests of a job capped at concurrency 1 in flight at once (%d requests)", most, total)
	}
	t.Logf("at most %d request in flight over %d requests", most, total)
}
