package deploy

import (
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestPipelineKafkaKilled kills the pipeline's only broker with SIGKILL in the middle of a job and
// starts it again 10 s later: no member is restarted, and the job succeeds with every record exactly
// once. Before the fix the loader rejoined its group and never inserted again.
func TestPipelineKafkaKilled(t *testing.T) {
	stacktest.Require(t)
	const n = 40_000
	src := demosource.DefaultConfig()
	src.Records = n
	src.PageLatency = 80 * time.Millisecond // about 15 s of extraction: the outage falls inside it
	broker := ownKafka(t)
	p := newPipelineOn(t, src, stacktest.KafkaAt(t, broker.addr))
	env := p.with(map[string]string{"SLUICE_LOADER_BATCH_ROWS": "2000"})
	planner := start(t, "planner", env).ready(t)
	extractor := start(t, "extractor", env)
	extractor.ready(t)
	loader := start(t, "loader", env)
	loader.ready(t)

	j := submit(t, planner, jobSpec("kafkakill", p.srcURL, "kafkakill", 6, 100, 3))
	p.waitRows(t, "kafkakill", 4000, time.Minute)
	before := poll(t, planner, j.ID)
	broker.kill(t)
	if before.State != "running" || before.Records.Loaded >= n {
		t.Fatalf("the broker was killed after the job had ended: %+v", before)
	}
	_, keysAtKill := p.count(t, "kafkakill")
	time.Sleep(10 * time.Second) // the outage itself
	broker.start(t)

	j = await(t, planner, j.ID, 4*time.Minute)
	if j.State != "succeeded" || j.Records.Loaded != n || j.Records.DeadLettered != 0 {
		t.Fatalf("job ended %+v", j)
	}
	checkExact(t, p, "kafkakill", n, src.RecordSize)
	if keysAtKill >= n {
		t.Fatalf("all %d keys were in ClickHouse when the broker died: the fault came too late", keysAtKill)
	}
	for _, s := range []*proc{extractor, loader} {
		if !s.running() {
			t.Fatalf("%s exited during the outage", s.name)
		}
	}
}
