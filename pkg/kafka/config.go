package kafka

import (
	"fmt"
	"regexp"
	"time"

	"github.com/sluicedata/sluice/pkg/config"
)

// Config is the Kafka part of every service's configuration, read from SLUICE_KAFKA_… variables.
type Config struct {
	// Brokers are the seed brokers, host:port, comma-separated.
	Brokers []string `env:"BROKERS, default=127.0.0.1:9092"`
	// ClientID names the client in broker logs and quotas; empty means the service name.
	ClientID string `env:"CLIENT_ID"`
	// DialTimeout bounds one connection attempt.
	DialTimeout time.Duration `env:"DIAL_TIMEOUT, default=10s"`
	// RequestTimeout bounds one request round trip beyond what the request itself waits.
	RequestTimeout time.Duration `env:"REQUEST_TIMEOUT, default=30s"`
	// SessionTimeout is how long the group coordinator waits for a silent member before it gives
	// the member's partitions to others; RebalanceTimeout is how long members may take to rejoin.
	SessionTimeout   time.Duration `env:"SESSION_TIMEOUT, default=45s"`
	RebalanceTimeout time.Duration `env:"REBALANCE_TIMEOUT, default=60s"`
	// CreateTopics makes a service create the missing topics when it starts.
	CreateTopics bool `env:"CREATE_TOPICS, default=true"`
	// ReplicationFactor for created topics; -1 takes the broker's default.replication.factor.
	ReplicationFactor int `env:"REPLICATION_FACTOR, default=-1"`
	// TLS connects to the brokers with TLS, verified with TLSFiles (SLUICE_KAFKA_TLS_CA_FILE, …).
	TLS      bool            `env:"TLS, default=false"`
	TLSFiles config.TLSFiles `env:", prefix=TLS_"`
	// SASL authenticates to the brokers (SLUICE_KAFKA_SASL_MECHANISM, …).
	SASL SASL `env:", prefix=SASL_"`

	TasksTopic       string `env:"TASKS_TOPIC, default=sluice.tasks"`
	TasksPartitions  int    `env:"TASKS_PARTITIONS, default=12"`
	RawTopic         string `env:"RAW_TOPIC, default=sluice.raw"`
	RawPartitions    int    `env:"RAW_PARTITIONS, default=12"`
	DLQTopic         string `env:"DLQ_TOPIC, default=sluice.dlq"`
	DLQPartitions    int    `env:"DLQ_PARTITIONS, default=3"`
	EventsTopic      string `env:"EVENTS_TOPIC, default=sluice.events"`
	EventsPartitions int    `env:"EVENTS_PARTITIONS, default=3"`
	// JobsTopic is compacted: the last state of every job, which outlives the events' retention.
	JobsTopic      string `env:"JOBS_TOPIC, default=sluice.jobs"`
	JobsPartitions int    `env:"JOBS_PARTITIONS, default=3"`
	// SchemasTopic is compacted: the sink schemas of typed jobs, keyed by id, which the loader
	// resolves the records' schema ids from.
	SchemasTopic      string `env:"SCHEMAS_TOPIC, default=sluice.schemas"`
	SchemasPartitions int    `env:"SCHEMAS_PARTITIONS, default=1"`
	// LeaseTopic is the planners' lease: one partition, compacted. The planner whose member of
	// SLUICE_PLANNER_LEASE_GROUP is assigned it leads, and records there where it serves.
	LeaseTopic string `env:"LEASE_TOPIC, default=sluice.planner-lease"`
}

var compact = "compact"

// legalTopic is Kafka's own rule for topic names.
var legalTopic = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// Validate reports every problem with the Kafka configuration.
func (c Config) Validate() error {
	var p config.Problems
	p.AddAddresses("KAFKA_BROKERS", c.Brokers)
	if c.DialTimeout <= 0 {
		p.Addf("KAFKA_DIAL_TIMEOUT", "must be positive, got %s", c.DialTimeout)
	}
	if c.RequestTimeout <= 0 {
		p.Addf("KAFKA_REQUEST_TIMEOUT", "must be positive, got %s", c.RequestTimeout)
	}
	if c.SessionTimeout < 6*time.Second || c.SessionTimeout > 30*time.Minute {
		p.Addf("KAFKA_SESSION_TIMEOUT", "must be between 6s and 30m (the broker's usual group bounds), got %s", c.SessionTimeout)
	}
	if c.RebalanceTimeout < time.Second {
		p.Addf("KAFKA_REBALANCE_TIMEOUT", "must be at least 1s, got %s", c.RebalanceTimeout)
	}
	if c.ReplicationFactor == 0 || c.ReplicationFactor < -1 || c.ReplicationFactor > 32767 {
		p.Addf("KAFKA_REPLICATION_FACTOR", "must be -1 (broker default) or between 1 and 32767, got %d", c.ReplicationFactor)
	}
	c.TLSFiles.Validate(&p, "KAFKA_TLS_", "KAFKA_TLS", c.TLS)
	c.SASL.validate(&p, c.TLS, c.Brokers)
	seen := map[string]string{}
	for _, t := range c.topicVars() {
		if !legalTopic.MatchString(t.name) || t.name == "." || t.name == ".." {
			p.Addf(t.nameVar, "%q is not a legal topic name (letters, digits, '.', '_', '-'; at most 249)", t.name)
		}
		if other, dup := seen[t.name]; dup {
			p.Addf(t.nameVar, "%q is also %s%s; each topic needs its own name", t.name, config.Prefix, other)
		}
		seen[t.name] = t.nameVar
		if t.partitions < 1 || t.partitions > 100000 {
			p.Addf(t.partitionsVar, "must be between 1 and 100000, got %d", t.partitions)
		}
	}
	return p.Err()
}

// TopicSpec is a topic the pipeline needs and the partition count it is created with.
type TopicSpec struct {
	Name       string
	Partitions int32
	// Configs are set when the topic is created (cleanup.policy for a compacted topic).
	Configs map[string]*string
}

// Topics returns the pipeline's topics: tasks, raw records, dead letters, job events, job states,
// sink schemas and the planners' lease.
func (c Config) Topics() []TopicSpec {
	vars := c.topicVars()
	specs := make([]TopicSpec, len(vars))
	for i, v := range vars {
		specs[i] = TopicSpec{Name: v.name, Partitions: int32(v.partitions), Configs: v.configs}
	}
	return specs
}

type topicVar struct {
	name                   string
	partitions             int
	nameVar, partitionsVar string
	configs                map[string]*string
}

func (c Config) topicVars() []topicVar {
	return []topicVar{
		{c.TasksTopic, c.TasksPartitions, "KAFKA_TASKS_TOPIC", "KAFKA_TASKS_PARTITIONS", nil},
		{c.RawTopic, c.RawPartitions, "KAFKA_RAW_TOPIC", "KAFKA_RAW_PARTITIONS", nil},
		{c.DLQTopic, c.DLQPartitions, "KAFKA_DLQ_TOPIC", "KAFKA_DLQ_PARTITIONS", nil},
		{c.EventsTopic, c.EventsPartitions, "KAFKA_EVENTS_TOPIC", "KAFKA_EVENTS_PARTITIONS", nil},
		{c.JobsTopic, c.JobsPartitions, "KAFKA_JOBS_TOPIC", "KAFKA_JOBS_PARTITIONS", map[string]*string{"cleanup.policy": &compact}},
		{c.SchemasTopic, c.SchemasPartitions, "KAFKA_SCHEMAS_TOPIC", "KAFKA_SCHEMAS_PARTITIONS", map[string]*string{"cleanup.policy": &compact}},
		// One partition, whatever else is configured: its one holder leads.
		{c.LeaseTopic, 1, "KAFKA_LEASE_TOPIC", "KAFKA_LEASE_TOPIC", map[string]*string{"cleanup.policy": &compact}},
	}
}

func (t TopicSpec) String() string { return fmt.Sprintf("%s (%d partitions)", t.Name, t.Partitions) }
