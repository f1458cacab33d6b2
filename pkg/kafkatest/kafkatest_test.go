package kafkatest

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestRefuse(t *testing.T) {
	req := kmsg.NewPtrProduceRequest()
	for _, name := range []string{"raw", "dlq"} {
		tp := kmsg.NewProduceRequestTopic()
		tp.Topic = name
		for p := range int32(2) {
			pp := kmsg.NewProduceRequestTopicPartition()
			pp.Partition = p
			tp.Partitions = append(tp.Partitions, pp)
		}
		req.Topics = append(req.Topics, tp)
	}
	resp := Refuse(req, kerr.NotEnoughReplicas.Code)
	n := 0
	for i, tp := range resp.Topics {
		if tp.Topic != req.Topics[i].Topic {
			t.Fatalf("topic %d is %q, want %q", i, tp.Topic, req.Topics[i].Topic)
		}
		for j, p := range tp.Partitions {
			if p.Partition != int32(j) || p.ErrorCode != kerr.NotEnoughReplicas.Code {
				t.Fatalf("%s partition %d: %+v", tp.Topic, j, p)
			}
			n++
		}
	}
	if n != 4 {
		t.Fatalf("%d partitions answered, want 4", n)
	}
}
