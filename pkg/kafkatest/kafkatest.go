// Package kafkatest holds what tests against franz-go's kfake share.
package kafkatest

import "github.com/twmb/franz-go/pkg/kmsg"

// Refuse returns the response that refuses every partition of req with code, for a kfake control
// function: `return kafkatest.Refuse(pr, kerr.NotEnoughReplicas.Code), nil, true`.
func Refuse(req *kmsg.ProduceRequest, code int16) *kmsg.ProduceResponse {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, tp := range req.Topics {
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic, rt.TopicID = tp.Topic, tp.TopicID
		for _, p := range tp.Partitions {
			rp := kmsg.NewProduceResponseTopicPartition()
			rp.Partition, rp.ErrorCode = p.Partition, code
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}
