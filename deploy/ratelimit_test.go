package deploy

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestPipelineGroupRateLimit: a job's rate_limit holds for the whole extractor group, within 10 %
// measured at the source, with one member and with three.
func TestPipelineGroupRateLimit(t *testing.T) {
	stacktest.Require(t)
	const limit = 30.0
	for _, members := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d extractors", members), func(t *testing.T) {
			src := demosource.DefaultConfig()
			src.Records = 50_000
			p := newPipeline(t, src)
			env := p.with(map[string]string{"SLUICE_EXTRACTOR_CONCURRENCY": "8"})
			planner := start(t, "planner", env).ready(t)
			var xs []*proc
			for i := range members {
				x := start(t, fmt.Sprintf("extractor-%d", i+1), env)
				x.ready(t)
				xs = append(xs, x)
			}
			start(t, "loader", env).ready(t)
			spec := fmt.Sprintf(`name: paced
source:
  type: http
  url: %s/api/users
  records_path: data
  key: id
  pagination: {type: offset, page_size: 10, total_path: total}
  rate_limit: %v
tasks: 24
sink:
  table: paced
`, p.srcURL, limit)
			submit(t, planner, spec)
			// Every member knows the group's size and is working before the measure starts.
			deadline := time.Now().Add(time.Minute)
			for _, x := range xs {
				for metric(t, x.addr(t), "extractor_group_members") != float64(members) ||
					metric(t, x.addr(t), "extractor_tasks_in_flight") == 0 {
					if time.Now().After(deadline) {
						t.Fatalf("%s does not count %d members at work within a minute", x.name, members)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			const window = 10 * time.Second
			first, began := p.source.Stats().Requests, time.Now()
			time.Sleep(window) // the measure itself
			rate := float64(p.source.Stats().Requests-first) / time.Since(began).Seconds()
			if math.Abs(rate-limit)/limit > 0.10 {
				t.Fatalf("%.1f requests/s at the source with %d extractors, want %v ± 10 %%", rate, members, limit)
			}
			t.Logf("%.1f requests/s at the source with %d extractors (limit %v)", rate, members, limit)
		})
	}
}
