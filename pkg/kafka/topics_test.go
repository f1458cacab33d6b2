package kafka_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// fakeCluster returns a client of an in-process kfake cluster that already has the topic "existing"
// with two partitions.
func fakeCluster(t *testing.T) *kgo.Client {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "existing"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cfg := kafka.Config{Brokers: c.ListenAddrs(), DialTimeout: time.Second, RequestTimeout: 5 * time.Second}
	cl, err := kafka.NewClient(cfg, "test", stacktest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func TestEnsureTopicsFake(t *testing.T) {
	cl := fakeCluster(t)
	ctx := context.Background()
	want := []kafka.TopicSpec{{Name: "existing", Partitions: 6}, {Name: "fresh", Partitions: 3}}

	first, err := kafka.EnsureTopics(ctx, cl, 1, want)
	if err != nil {
		t.Fatal(err)
	}
	second, err := kafka.EnsureTopics(ctx, cl, 1, want)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		got, want []kafka.TopicSpec
	}{
		{"first run creates the missing topic", first.Created, []kafka.TopicSpec{{Name: "fresh", Partitions: 3}}},
		{"first run keeps the existing topic", first.Existing, []kafka.TopicSpec{{Name: "existing", Partitions: 2}}},
		{"an existing topic with fewer partitions is reported", first.Fewer, []kafka.TopicSpec{{Name: "existing", Partitions: 2}}},
		{"second run creates nothing", second.Created, nil},
		{"second run finds both", second.Existing, []kafka.TopicSpec{{Name: "existing", Partitions: 2}, {Name: "fresh", Partitions: 3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !slices.EqualFunc(tt.got, tt.want, sameTopic) {
				t.Fatalf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestCheckTopicsChangesNothing(t *testing.T) {
	cl := fakeCluster(t)
	ctx := context.Background()
	report, err := kafka.CheckTopics(ctx, cl, []kafka.TopicSpec{{Name: "absent", Partitions: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(report.Missing, []kafka.TopicSpec{{Name: "absent", Partitions: 1}}, sameTopic) {
		t.Fatalf("missing = %v", report.Missing)
	}
	topics, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if topics.Has("absent") {
		t.Fatal("CheckTopics created a topic")
	}
}

// TestBootstrapRealBroker creates the pipeline's four topics on the real broker from several
// processes' worth of concurrent callers, and checks their partition counts with the broker.
func TestBootstrapRealBroker(t *testing.T) {
	cfg := stacktest.Kafka(t)
	cl, err := kafka.NewClient(cfg, "test", stacktest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const callers = 3
	reports := make([]kafka.TopicReport, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { reports[i], errs[i] = kafka.EnsureTopics(ctx, cl, -1, cfg.Topics()) })
	}
	wg.Wait()

	created := 0
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		created += len(reports[i].Created)
		if n := len(reports[i].Created) + len(reports[i].Existing); n != len(cfg.Topics()) {
			t.Fatalf("caller %d accounted for %d topics, want %d: %+v", i, n, len(cfg.Topics()), reports[i])
		}
	}
	if created != len(cfg.Topics()) {
		t.Fatalf("%d creations reported over all callers, want each of the %d topics created once", created, len(cfg.Topics()))
	}

	var names []string
	for _, tp := range cfg.Topics() {
		names = append(names, tp.Name)
	}
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range cfg.Topics() {
		t.Run(want.Name, func(t *testing.T) {
			d := details[want.Name]
			if d.Err != nil {
				t.Fatalf("broker says: %v", d.Err)
			}
			if got := int32(len(d.Partitions)); got != want.Partitions {
				t.Fatalf("broker has %d partitions, want %d", got, want.Partitions)
			}
		})
	}

	configs, err := adm.DescribeTopicConfigs(ctx, cfg.JobsTopic, cfg.SchemasTopic)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{cfg.JobsTopic, cfg.SchemasTopic} {
		if c, err := configs.On(topic, nil); err != nil || !slices.ContainsFunc(c.Configs, func(c kadm.Config) bool {
			return c.Key == "cleanup.policy" && c.Value != nil && *c.Value == "compact"
		}) {
			t.Fatalf("%s configs %+v (%v), want cleanup.policy=compact", topic, c, err)
		}
	}

	if err := kafka.Bootstrap(ctx, cl, cfg, stacktest.Logger(t)); err != nil {
		t.Fatalf("bootstrap over existing topics: %v", err)
	}
}

func sameTopic(a, b kafka.TopicSpec) bool { return a.Name == b.Name && a.Partitions == b.Partitions }
