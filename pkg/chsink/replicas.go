package chsink

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/sluicedata/sluice/pkg/chconn"
)

// replicas are the connections to a cluster's replicas, opened when first used, and the replica
// of each shard that took its last insert.
type replicas struct {
	cfg chconn.Config
	log *slog.Logger

	mu    sync.Mutex
	conns map[string]*chconn.Conn
	pref  map[int]int
}

func newReplicas(cfg chconn.Config, log *slog.Logger) *replicas {
	cfg.CreateDatabase = false
	cfg.MaxOpenConns = min(cfg.MaxOpenConns, 4)
	return &replicas{cfg: cfg, log: log, conns: map[string]*chconn.Conn{}, pref: map[int]int{}}
}

// get returns the connection to the replica at addr, opening it when it is not open yet.
func (r *replicas) get(ctx context.Context, addr string) (*chconn.Conn, error) {
	r.mu.Lock()
	c := r.conns[addr]
	r.mu.Unlock()
	if c != nil {
		return c, nil
	}
	cfg := r.cfg
	cfg.Addr = []string{addr}
	c, err := chconn.Open(ctx, cfg, r.log)
	if err != nil {
		return nil, fmt.Errorf("connect to replica %s: %w", addr, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if have := r.conns[addr]; have != nil {
		_ = c.Close()
		return have, nil
	}
	r.conns[addr] = c
	return c, nil
}

func (r *replicas) preferred(shard int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pref[shard]
}

func (r *replicas) prefer(shard, replica int) {
	r.mu.Lock()
	r.pref[shard] = replica
	r.mu.Unlock()
}

func (r *replicas) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for addr, c := range r.conns {
		_ = c.Close()
		delete(r.conns, addr)
	}
}
