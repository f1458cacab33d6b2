package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sluicedata/sluice/pkg/demosource"
)

// TestLongTaskIsNoStall runs one task that lasts longer than the stall timeout, page after page:
// the member makes progress all along, so /readyz never reports a stall while it works, and the
// task is committed at its end.
func TestLongTaskIsNoStall(t *testing.T) {
	if testing.Short() {
		t.Skip("lasts 45 s")
	}
	const n, pageSize = 7_500, 50 // 150 pages of 300 ms: 45 s, past the 30 s stall timeout
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srcCfg := demosource.DefaultConfig()
	srcCfg.Records, srcCfg.PageLatency = n, 300*time.Millisecond
	src, err := demosource.New(srcCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(src.Handler())
	defer ts.Close()

	logs := startExtractor(t, c.ListenAddrs()[0], map[string]string{"SLUICE_STALL_TIMEOUT": "30s"})
	ops := logs.Await(t, "ops server listening", 30*time.Second)["addr"].(string)
	cl := publishTask(t, c.ListenAddrs(), ts.URL, n, pageSize)
	adm := kadm.NewClient(cl)
	began := time.Now()
	for {
		offs, err := adm.FetchOffsets(context.Background(), "extractor")
		if o, ok := offs.Lookup("sluice.tasks", 0); err == nil && ok && o.At == 1 {
			break
		}
		if time.Since(began) > 3*time.Minute {
			t.Fatal("the task was not committed within 3 minutes")
		}
		resp, err := http.Get("http://" + ops + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/readyz answered %d %s into the task: a member working through pages is no stall", resp.StatusCode, time.Since(began))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if d := time.Since(began); d < 40*time.Second {
		t.Fatalf("the task took %s: shorter than the stall timeout and a measure, it proves nothing", d)
	}
}
