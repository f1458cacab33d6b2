package deploy

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestHostileSpecs submits a table of hostile and broken specs to a running planner, as someone
// with a submit token would: each is refused with 400 and what was wrong, nothing reaches the tasks
// or events topics and no source is asked, and the planner's peak memory stays bounded (one of
// these specs took a planner to 637 MiB before).
func TestHostileSpecs(t *testing.T) {
	stacktest.Require(t)
	p := newPipeline(t, demosource.DefaultConfig())
	env := p.with(map[string]string{"SLUICE_SECRET_HOSTS": "SOURCE_SECRET=127.0.0.1", "SOURCE_SECRET": "the-client-secret"})
	planner := start(t, "planner", env)
	api := planner.ready(t)
	cl, err := kafka.NewClient(p.kafka, "hostile-test", stacktest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ends := func() map[string]int64 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out := map[string]int64{}
		listed, err := kadm.NewClient(cl).ListEndOffsets(ctx, p.kafka.TasksTopic, p.kafka.EventsTopic)
		if err != nil {
			t.Fatal(err)
		}
		listed.Each(func(o kadm.ListedOffset) { out[o.Topic] += o.Offset })
		return out
	}
	before, asked := ends(), p.source.Stats().PagesServed

	head := "name: hostile\nsource:\n  type: http\n  url: " + p.srcURL + "/api/users\n  records_path: data\n  key: id\n" +
		"  pagination: {type: offset, offset_param: offset, limit_param: limit, page_size: 100, total_path: total}\n"
	long := strings.Repeat("n", 8000)
	var anchors strings.Builder
	anchors.WriteString("x0: &a0 [" + long + "]\n")
	for i := 1; i < 30; i++ {
		fmt.Fprintf(&anchors, "x%d: &a%d [*a%d, *a%d]\n", i, i, i-1, i-1)
	}
	cases := []struct{ name, spec, want string }{
		{"columns of one anchor, aliased", head + "sink: {table: t, columns: [&a {name: " + long + ", type: Int64}" + strings.Repeat(", *a", 3000) + "]}\n",
			"larger than 1048576 bytes once its aliases are expanded"},
		{"anchors of anchors", head + "sink: {table: t}\n" + anchors.String(), "larger than 1048576 bytes once its aliases are expanded"},
		{"nested past the shape", head + "sink: {table: t}\nx: " + strings.Repeat("[", 60) + strings.Repeat("]", 60) + "\n", "nests deeper than 32 levels"},
		{"slices across int64", strings.Replace(head, ", total_path: total}", "}\n  slices: {type: key_range, param_from: a, param_to: b, start: -9223372036854775808, end: 9223372036854775807, step: 2}", 1) + "sink: {table: t}\n",
			"make 2147483647 slices, more than 10000"},
		{"SQL after a column type", head + "sink: {table: t, create: true, order_by: [id], columns: [{name: id, type: Int64}, {name: at, type: \"DateTime('UTC'), x String DEFAULT 1\"}]}\n",
			"after the type"},
		{"a time zone that is not one", head + "sink: {table: t, create: true, order_by: [id], columns: [{name: id, type: Int64}, {name: at, type: \"DateTime('../../etc/passwd')\"}]}\n",
			"not a time zone of the tz database"},
		{"a column type too long", head + "sink: {table: t, create: true, order_by: [id], columns: [{name: id, type: Int64}, {name: e, type: \"Enum16(" +
			strings.TrimSuffix(func() string {
				var b strings.Builder
				for i := range 1100 {
					fmt.Fprintf(&b, "'v%d' = %d, ", i, i)
				}
				return b.String()
			}(), ", ") + ")\"}]}\n", "column type of 15386 bytes: at most 4096"},
		{"a thousand unknown fields", head + "sink: {table: t}\n" + func() string {
			var b strings.Builder
			for i := range 3000 {
				fmt.Fprintf(&b, "f%d: 1\n", i)
			}
			return b.String()
		}(), "too many problems"},
		{"a numeric host for a loopback address", strings.Replace(head, p.srcURL, "http://2130706434:1", 1) + "sink: {table: t}\n",
			"2130706434 resolves to a loopback address"},
		{"a token sent to another host", strings.Replace(head, p.srcURL, "http://127.0.0.2:1", 1) +
			"  auth: {type: oauth2_client_credentials, token_url: " + p.srcURL + "/oauth/token, client_id: sluice, client_secret: \"${SOURCE_SECRET}\"}\nsink: {table: t}\n",
			"the OAuth2 token bought with ${SOURCE_SECRET} may not be sent to 127.0.0.2"},
	}
	for _, c := range cases {
		began := time.Now()
		status, body := call(t, http.MethodPost, api+"/v1/jobs", apiToken, c.spec)
		took := time.Since(began)
		if status != http.StatusBadRequest || !strings.Contains(body, c.want) {
			t.Errorf("%s (%d bytes): %d %.300s; want 400 saying %q", c.name, len(c.spec), status, body, c.want)
			continue
		}
		if len(body) > 64<<10 {
			t.Errorf("%s: an answer of %d bytes", c.name, len(body))
		}
		t.Logf("%s: %d bytes refused in %s with a %d-byte answer", c.name, len(c.spec), took.Round(time.Millisecond), len(body))
	}

	if after := ends(); after[p.kafka.TasksTopic] != before[p.kafka.TasksTopic] || after[p.kafka.EventsTopic] != before[p.kafka.EventsTopic] {
		t.Errorf("the refused specs published something: %v, then %v", before, after)
	}
	if n := p.source.Stats().PagesServed - asked; n != 0 {
		t.Errorf("the source served %d pages to refused specs", n)
	}
	peak := peakRSS(t, planner)
	if peak > 256<<20 {
		t.Errorf("the planner's memory peaked at %d MiB", peak>>20)
	}
	t.Logf("the planner's peak memory: %d MiB", peak>>20)
}
