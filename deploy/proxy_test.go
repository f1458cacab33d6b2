package deploy

import (
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// proxy is a TCP proxy on loopback that a test puts between the services and Kafka or ClickHouse,
// to cut every connection through it at will.
type proxy struct {
	ln     net.Listener
	target atomic.Pointer[string]
	mu     sync.Mutex
	conns  map[net.Conn]bool
	cuts   atomic.Int64
}

// newProxy listens on addr ("127.0.0.1:0" for any port) and forwards to target (see to).
func newProxy(t testing.TB, addr, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, conns: map[net.Conn]bool{}}
	p.target.Store(&target)
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

// to points the proxy at target, for the connections from now on.
func (p *proxy) to(target string) { p.target.Store(&target) }

func (p *proxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.DialTimeout("tcp", *p.target.Load(), 5*time.Second)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns[in], p.conns[out] = true, true
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(in, out)
		go pipe(out, in)
	}
}

// cut closes every connection through the proxy; it returns how many there were.
func (p *proxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		c.Close()
		n++
	}
	if n > 0 {
		p.cuts.Add(1)
	}
	return n
}

// chaos cuts every connection every 0.5–1.5 s until stop is closed.
func (p *proxy) chaos(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(500*time.Millisecond + time.Duration(rand.IntN(1000))*time.Millisecond):
			p.cut()
		}
	}
}
