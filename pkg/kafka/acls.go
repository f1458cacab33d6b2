package kafka

import (
	"context"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
)

// Grant is what one service's principal may do with one resource: the least it needs. The README's
// table of ACLs is these grants; the secured pipeline test runs every service under exactly them.
type Grant struct {
	// Resource is "topic", "group" or "cluster"; Name the topic or group ("kafka-cluster").
	Resource string
	Name     string
	Ops      []kadm.ACLOperation
}

func (g Grant) String() string {
	ops := make([]string, len(g.Ops))
	for i, op := range g.Ops {
		ops[i] = op.String()
	}
	return fmt.Sprintf("%s %s: %s", g.Resource, g.Name, strings.Join(ops, ", "))
}

// Services are the services that Grants knows.
var Services = []string{"planner", "extractor", "loader"}

// Groups are the consumer groups of the extractors and the loaders, and the planners' lease group.
type Groups struct {
	Extractor, Loader, Planner string
}

// Grants returns what service needs with this configuration and these groups. With CreateTopics a
// service may also create the pipeline's topics; without it, an administrator creates them
// (sluicectl topics).
func (c Config) Grants(service string, groups Groups) ([]Grant, error) {
	const (
		read     = kadm.OpRead
		write    = kadm.OpWrite
		describe = kadm.OpDescribe
		configs  = kadm.OpDescribeConfigs
	)
	topic := func(name string, ops ...kadm.ACLOperation) Grant {
		if c.CreateTopics {
			ops = append(ops, kadm.OpCreate)
		}
		return Grant{Resource: "topic", Name: name, Ops: append(ops, configs)}
	}
	var g []Grant
	switch service {
	case "planner":
		// It reads the oldest lagging record of the tasks and raw topics (lag in seconds) and
		// describes the groups whose lag it measures.
		g = []Grant{
			topic(c.TasksTopic, read, write, describe),
			topic(c.RawTopic, read, describe),
			topic(c.DLQTopic, read, describe),
			topic(c.EventsTopic, read, write, describe),
			topic(c.JobsTopic, read, write, describe),
			topic(c.SchemasTopic, write, describe),
			// The lease: planners join its group, the leader writes where it serves, the others read it.
			topic(c.LeaseTopic, read, write, describe),
			{Resource: "group", Name: groups.Extractor, Ops: []kadm.ACLOperation{describe}},
			{Resource: "group", Name: groups.Loader, Ops: []kadm.ACLOperation{describe}},
			{Resource: "group", Name: groups.Planner, Ops: []kadm.ACLOperation{read, describe}},
		}
	case "extractor":
		g = []Grant{
			topic(c.TasksTopic, read, write, describe),
			topic(c.RawTopic, write, describe),
			topic(c.DLQTopic, write, describe),
			topic(c.EventsTopic, write, describe),
			// It reads the jobs' final states to skip the tasks of cancelled jobs.
			topic(c.JobsTopic, read, describe),
			topic(c.SchemasTopic, describe),
			{Resource: "group", Name: groups.Extractor, Ops: []kadm.ACLOperation{read, describe}},
		}
	case "loader":
		g = []Grant{
			topic(c.TasksTopic, describe),
			topic(c.RawTopic, read, describe),
			topic(c.DLQTopic, write, describe),
			topic(c.EventsTopic, write, describe),
			topic(c.JobsTopic, describe),
			topic(c.SchemasTopic, read, describe),
			{Resource: "group", Name: groups.Loader, Ops: []kadm.ACLOperation{read, describe}},
		}
	default:
		return nil, fmt.Errorf("no service %q: want one of %s", service, strings.Join(Services, ", "))
	}
	return g, nil
}

// Allow creates ALLOW ACLs for principal ("User:sluice-loader") from any host, one per grant's
// operation, with an administrator's client.
func Allow(ctx context.Context, adm *kadm.Client, principal string, grants []Grant) error {
	for _, g := range grants {
		b := kadm.NewACLs().Allow(principal).AllowHosts("*").Operations(g.Ops...).ResourcePatternType(kadm.ACLPatternLiteral)
		switch g.Resource {
		case "topic":
			b.Topics(g.Name)
		case "group":
			b.Groups(g.Name)
		case "cluster":
			b.Clusters()
		}
		results, err := adm.CreateACLs(ctx, b)
		if err != nil {
			return fmt.Errorf("create ACLs for %s on %s: %w", principal, g, err)
		}
		for _, r := range results {
			if r.Err != nil {
				return fmt.Errorf("create ACLs for %s on %s: %w", principal, g, r.Err)
			}
		}
	}
	return nil
}
