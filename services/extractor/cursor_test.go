package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicedata/sluice/pkg/events"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// TestTaskLeavesOutCursorsItCannotTrust runs an incremental task whose records stamp one value
// decades ahead and one that is no time: the task reports the largest of the others, and counts
// the two it left out, so that neither becomes the job's mark.
func TestTaskLeavesOutCursorsItCannotTrust(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("offset") != "0" {
			io.WriteString(w, `{"data": []}`)
			return
		}
		io.WriteString(w, `{"data": [
			{"id": 1, "updated_at": "2024-05-01T00:00:00Z"},
			{"id": 2, "updated_at": "2099-01-01T00:00:00Z"},
			{"id": 3, "updated_at": "N/A"},
			{"id": 4, "updated_at": "2024-05-03T00:00:00Z"},
			{"id": 5}]}`)
	}))
	defer ts.Close()

	logs := startExtractor(t, c.ListenAddrs()[0], nil)
	logs.Await(t, "service started", 30*time.Second)
	task, err := proto.Marshal(&sluicev1.Task{JobId: "items", TaskId: "items-t0000", Table: "items",
		Source: &sluicev1.Source{
			Kind: &sluicev1.Source_Http{Http: &sluicev1.HttpSource{Url: ts.URL, RecordsPath: "data", Key: "id", MaxRetries: 1,
				Pagination: &sluicev1.Pagination{Type: sluicev1.Pagination_TYPE_OFFSET, OffsetParam: "offset", LimitParam: "limit", PageSize: 10}}},
			Incremental: &sluicev1.Incremental{CursorField: "updated_at", Kind: "time", MaxSkew: durationpb.New(24 * time.Hour)},
		},
		Slice: &sluicev1.Task_Offsets{Offsets: &sluicev1.OffsetRange{Start: 0, End: 5}}})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("sluice.events"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "sluice.tasks", Value: task}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("no TaskExtracted within 30 s")
		}
		for _, r := range fetches.Records() {
			ev, err := events.Decode(r)
			if err != nil || ev.GetTaskExtracted() == nil {
				continue
			}
			x := ev.GetTaskExtracted()
			if x.MaxCursor != "2024-05-03T00:00:00Z" || x.GetCursorRejected().GetUnparseable() != 1 || x.GetCursorRejected().GetFuture() != 1 {
				t.Fatalf("the task reported max cursor %q, rejected %v; want 2024-05-03T00:00:00Z, 1 unparseable and 1 future",
					x.MaxCursor, x.GetCursorRejected())
			}
			return
		}
	}
}
