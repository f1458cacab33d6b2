package chsink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/sluicedata/sluice/pkg/chconn"
)

// Cluster is a ClickHouse cluster as system.clusters describes it: its shards, in the order of
// their numbers, each with its weight and its replicas' native-protocol addresses.
type Cluster struct {
	Name   string
	Shards []Shard
	// slots maps hash % total weight to a shard's index, as a Distributed table does.
	slots []int
}

// Shard is one shard of a cluster.
type Shard struct {
	Num      uint32
	Weight   uint32
	Replicas []string
}

// ErrNoCluster is a cluster name that system.clusters does not know.
var ErrNoCluster = errors.New("no such cluster in system.clusters")

// maxSlots bounds the total weight of a cluster's shards: the slots are a table of that size.
const maxSlots = 1 << 16

// NewCluster returns the cluster of shards, which must be in the order of their numbers.
func NewCluster(name string, shards []Shard) (*Cluster, error) {
	c := &Cluster{Name: name, Shards: shards}
	total := 0
	for i, s := range shards {
		if len(s.Replicas) == 0 {
			return nil, fmt.Errorf("cluster %s: shard %d has no replica", name, s.Num)
		}
		total += int(s.Weight)
		if total > maxSlots {
			return nil, fmt.Errorf("cluster %s: the shards' weights add up to more than %d", name, maxSlots)
		}
		for range s.Weight {
			c.slots = append(c.slots, i)
		}
	}
	if len(c.slots) == 0 {
		return nil, fmt.Errorf("cluster %s: no shard with a weight above 0", name)
	}
	return c, nil
}

// ReadCluster reads the cluster name from system.clusters of the server conn is connected to.
func ReadCluster(ctx context.Context, conn *chconn.Conn, name string) (*Cluster, error) {
	rows, err := conn.Query(ctx, "SELECT shard_num, shard_weight, host_name, port FROM system.clusters "+
		"WHERE cluster = ? ORDER BY shard_num, replica_num", name)
	if err != nil {
		return nil, fmt.Errorf("read cluster %s from system.clusters: %w", name, err)
	}
	defer rows.Close()
	var shards []Shard
	for rows.Next() {
		var num, weight uint32
		var host string
		var port uint16
		if err := rows.Scan(&num, &weight, &host, &port); err != nil {
			return nil, fmt.Errorf("read cluster %s from system.clusters: %w", name, err)
		}
		if len(shards) == 0 || shards[len(shards)-1].Num != num {
			shards = append(shards, Shard{Num: num, Weight: weight})
		}
		s := &shards[len(shards)-1]
		s.Replicas = append(s.Replicas, net.JoinHostPort(host, strconv.Itoa(int(port))))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read cluster %s from system.clusters: %w", name, err)
	}
	if len(shards) == 0 {
		return nil, fmt.Errorf("%w: %s (the server's remote_servers name the clusters)", ErrNoCluster, name)
	}
	return NewCluster(name, shards)
}

// ShardOf is the index in Shards of the shard that a Distributed table over the cluster sends a
// row to whose sharding key is hash: the slot hash modulo the total weight, the slots given to the
// shards in order, each as many as its weight.
func (c *Cluster) ShardOf(hash uint64) int { return c.slots[hash%uint64(len(c.slots))] }

// Route returns the rows of block by shard index: for each shard the indexes of its rows, in block
// order (none for a shard that gets no row), computed from column key of type t. A block split so
// is the same split every time, which lets a replicated table drop a part sent again.
func (c *Cluster) Route(block *Block, key string, t *Type) ([][]int, error) {
	col := block.Column(key)
	if col == nil {
		return nil, fmt.Errorf("the block has no sharding column %s", key)
	}
	hashes, err := HashColumn(t, col)
	if err != nil {
		return nil, err
	}
	out := make([][]int, len(c.Shards))
	for i, h := range hashes {
		s := c.ShardOf(h)
		out[s] = append(out[s], i)
	}
	return out, nil
}
