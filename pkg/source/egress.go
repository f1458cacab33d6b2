package source

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrEgress is a connection the egress policy refused: the job's source resolves to an address
// that the services may not reach. It is never retried.
var ErrEgress = errors.New("refused by the egress policy")

// EgressError says which host and address the policy refused, and why.
type EgressError struct {
	Host  string
	Addr  netip.Addr
	Range string
}

// Error names the host and the range, not the address a name resolved to: whoever submits a job
// must not learn this network's names. The services log Addr.
func (e *EgressError) Error() string {
	if !e.Addr.IsValid() || e.Addr.String() == e.Host {
		return fmt.Sprintf("%s is a %s address, which SLUICE_SOURCE_ALLOW does not allow", e.Host, e.Range)
	}
	return fmt.Sprintf("%s resolves to a %s address, which SLUICE_SOURCE_ALLOW does not allow", e.Host, e.Range)
}

func (e *EgressError) Unwrap() error { return ErrEgress }

// Resolver finds a host's addresses: net.DefaultResolver, or a fake one in tests.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// refused are the ranges a source may not reach unless SLUICE_SOURCE_ALLOW allows them: this
// machine, its networks and the cloud's metadata endpoints.
var refused = []struct {
	prefix netip.Prefix
	name   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared (carrier-grade NAT)"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("192.0.0.0/24"), "reserved"},
	{netip.MustParsePrefix("198.18.0.0/15"), "reserved"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("168.63.129.16/32"), "cloud platform"}, // Azure's wire server
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("::/96"), "reserved"}, // IPv4-compatible, deprecated
	{netip.MustParsePrefix("fc00::/7"), "private"},
	{netip.MustParsePrefix("fec0::/10"), "private"}, // site-local, deprecated
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "reserved"},
	{netip.MustParsePrefix("2001::/32"), "reserved"}, // Teredo tunnels
}

// embedded is the IPv4 address that a NAT64 (64:ff9b::/96) or 6to4 (2002::/16) address reaches.
func embedded(a netip.Addr) (netip.Addr, bool) {
	b := a.As16()
	switch {
	case netip.MustParsePrefix("64:ff9b::/96").Contains(a):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}), true
	case netip.MustParsePrefix("2002::/16").Contains(a):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), true
	}
	return netip.Addr{}, false
}

// Egress is where the services may connect for a job's source. By default every public address;
// never loopback, private, shared, link-local, multicast or reserved ones unless the allowlist
// (SLUICE_SOURCE_ALLOW) names the host or holds the address. The check happens when a connection
// is dialled, on the addresses the name resolved to then, and only those are dialled: a name that
// resolves to a public address when a job is submitted and to a private one later is refused.
type Egress struct {
	nets  []netip.Prefix
	hosts []string
	// Resolver finds hosts' addresses; nil is net.DefaultResolver.
	Resolver Resolver
	// Dialer dials the checked addresses; nil is a net.Dialer with a 30 s timeout.
	Dialer *net.Dialer
	// Proxy chooses a request's proxy; nil is http.ProxyFromEnvironment (HTTPS_PROXY, HTTP_PROXY,
	// NO_PROXY).
	Proxy func(*http.Request) (*url.URL, error)
}

// ParseEgress reads SLUICE_SOURCE_ALLOW: comma-separated addresses ("127.0.0.1", "::1"), CIDR
// ranges ("10.20.0.0/16") and host names ("db.internal", "*.corp.example" for its subdomains).
func ParseEgress(allow []string) (*Egress, error) {
	e := &Egress{}
	var errs []error
	for _, entry := range allow {
		entry = strings.ToLower(strings.TrimSpace(entry))
		switch {
		case entry == "":
		case strings.Contains(entry, "/"):
			p, err := netip.ParsePrefix(entry)
			if err != nil {
				errs = append(errs, fmt.Errorf("%q is not a CIDR range", entry))
				continue
			}
			e.nets = append(e.nets, p.Masked())
		default:
			if a, err := netip.ParseAddr(strings.Trim(entry, "[]")); err == nil {
				e.nets = append(e.nets, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
				continue
			}
			name := strings.TrimPrefix(entry, "*.")
			if name == "" || strings.ContainsAny(name, "*:@ ") {
				errs = append(errs, fmt.Errorf("%q is not an address, a CIDR range or a host name", entry))
				continue
			}
			e.hosts = append(e.hosts, entry)
		}
	}
	return e, errors.Join(errs...)
}

// String describes the policy for the services' start-up log.
func (e *Egress) String() string {
	var allowed []string
	for _, p := range e.nets {
		allowed = append(allowed, p.String())
	}
	allowed = append(allowed, e.hosts...)
	if len(allowed) == 0 {
		return "public addresses only"
	}
	return "public addresses and " + strings.Join(allowed, ", ")
}

// hostAllowed reports whether the allowlist names host.
func (e *Egress) hostAllowed(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	for _, pattern := range e.hosts {
		if suffix, wild := strings.CutPrefix(pattern, "*."); wild && strings.HasSuffix(h, "."+suffix) || pattern == h {
			return true
		}
	}
	return false
}

// CheckAddr returns why host's address a is refused, or nil.
func (e *Egress) CheckAddr(host string, a netip.Addr) error {
	// A zone (fe80::1%eth0) is no part of the range, and a prefix never contains a zoned address.
	a = a.WithZone("").Unmap()
	for _, p := range e.nets {
		if p.Contains(a) {
			return nil
		}
	}
	for _, r := range refused {
		if r.prefix.Contains(a) {
			return &EgressError{Host: host, Addr: a, Range: r.name}
		}
	}
	if v4, ok := embedded(a); ok {
		if err := e.CheckAddr(host, v4); err != nil {
			return &EgressError{Host: host, Addr: a, Range: err.(*EgressError).Range + " (through NAT64 or 6to4)"}
		}
	}
	return nil
}

// Resolve returns host's addresses when the policy lets the services connect to all of them. A
// host written as a number in any form (127.0.0.1, 2130706433, 0x7f.1, 017700000001, [::ffff:7f00:1])
// is that address, checked as every reading of it: nothing numeric is left to a resolver or a proxy
// to read its own way.
func (e *Egress) Resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	host = strings.Trim(host, "[]")
	if readings := numericHost(host); len(readings) > 0 {
		for _, a := range readings {
			if err := e.CheckAddr(host, a); err != nil {
				return nil, err
			}
		}
		return readings[:1], nil
	}
	var r Resolver = net.DefaultResolver
	if e.Resolver != nil {
		r = e.Resolver
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
	}
	if e.hostAllowed(host) {
		return addrs, nil
	}
	for _, a := range addrs {
		// One refused address refuses the name: which one a dial would take is not ours to choose.
		if err := e.CheckAddr(host, a); err != nil {
			return nil, err
		}
	}
	return addrs, nil
}

// DialContext dials address (host:port) on one of the addresses Resolve allows. The proxy that the
// operator configured is no exception: it connects wherever it is asked, so SLUICE_SOURCE_ALLOW must
// name it when it is on a refused address.
func (e *Egress) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	d := e.Dialer
	if d == nil {
		d = &net.Dialer{Timeout: 30 * time.Second}
	}
	if strings.HasPrefix(network, "unix") {
		return nil, &net.OpError{Op: "dial", Net: network, Err: &EgressError{Host: address, Range: "Unix socket"}}
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	addrs, err := e.Resolve(ctx, host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	return raceDial(ctx, d, network, port, addrs)
}

// numericHost reads host as an address: an IPv6 address, or an IPv4 one in any form that inet_aton
// and the resolvers and proxies built on it take (one to four parts, each decimal, octal with a
// leading 0 or hexadecimal with 0x, the last filling the bytes left). A form that reads differently
// when leading zeros are taken as decimal gives both readings. None: host is a name.
func numericHost(host string) []netip.Addr {
	host = strings.TrimSuffix(host, ".")
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.WithZone("").Unmap()}
	}
	var readings []netip.Addr
	for _, octal := range []bool{true, false} {
		if a, ok := parseIPv4Parts(host, octal); ok && !slices.Contains(readings, a) {
			readings = append(readings, a)
		}
	}
	return readings
}

// parseIPv4Parts parses the inet_aton forms of an IPv4 address; octal says whether a leading 0 makes
// a part octal.
func parseIPv4Parts(host string, octal bool) (netip.Addr, bool) {
	parts := strings.Split(host, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	values := make([]uint64, len(parts))
	for i, part := range parts {
		base, digits := 10, part
		switch {
		case len(part) > 2 && (part[:2] == "0x" || part[:2] == "0X"):
			base, digits = 16, part[2:]
		case octal && len(part) > 1 && part[0] == '0':
			base, digits = 8, part[1:]
		}
		v, err := strconv.ParseUint(digits, base, 32)
		if err != nil || digits == "" {
			return netip.Addr{}, false
		}
		values[i] = v
	}
	// Every part but the last is one byte; the last fills the bytes left.
	var n uint64
	for i, v := range values[:len(values)-1] {
		if v > 0xff {
			return netip.Addr{}, false
		}
		n |= v << (8 * (3 - i))
	}
	last := values[len(values)-1]
	if last >= 1<<(8*(5-len(values))) {
		return netip.Addr{}, false
	}
	n |= last
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}

// raceDial dials the addresses one after another, each 300 ms after the one before unless that one
// failed first (as net.Dialer does for IPv6 and IPv4), and returns the first connection made.
func raceDial(ctx context.Context, d *net.Dialer, network, port string, addrs []netip.Addr) (net.Conn, error) {
	if len(addrs) == 1 {
		return d.DialContext(ctx, network, net.JoinHostPort(addrs[0].String(), port))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		conn net.Conn
		err  error
	}
	results := make(chan result, len(addrs))
	next := make(chan struct{}, len(addrs))
	go func() {
		for i, a := range addrs {
			if i > 0 {
				select {
				case <-ctx.Done():
					// Every address gives one result: those not dialled, the context's error.
					for range addrs[i:] {
						results <- result{err: ctx.Err()}
					}
					return
				case <-next:
				case <-time.After(300 * time.Millisecond):
				}
			}
			go func() {
				conn, err := d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
				if err != nil {
					next <- struct{}{}
				}
				results <- result{conn, err}
			}()
		}
	}()
	var first error
	for range addrs {
		r := <-results
		if r.err == nil {
			cancel()
			// Late winners are closed: only the first connection is used.
			go func(left int) {
				for ; left > 0; left-- {
					if late := <-results; late.conn != nil {
						late.conn.Close()
					}
				}
			}(len(addrs) - 1)
			return r.conn, nil
		}
		if first == nil {
			first = r.err
		}
	}
	return nil, first
}

// proxy is http.ProxyFromEnvironment that checks the request's host against the policy first: the
// proxy will connect wherever it is asked.
func (e *Egress) proxy(req *http.Request) (*url.URL, error) {
	choose := e.Proxy
	if choose == nil {
		choose = http.ProxyFromEnvironment
	}
	u, err := choose(req)
	if err != nil || u == nil {
		return u, err
	}
	// The proxy resolves names itself: the policy checks the addresses this process resolves the
	// name to, and leaves a name it cannot resolve to the proxy, which the operator chose. A numeric
	// host is no name: Resolve checks every way of reading it. The proxy's own address is checked
	// when it is dialled.
	var refusal *EgressError
	if _, err := e.Resolve(req.Context(), req.URL.Hostname()); errors.As(err, &refusal) {
		return nil, err
	}
	return u, nil
}

// Transport is an HTTP transport that dials through the policy and honours the proxy variables
// (HTTPS_PROXY, HTTP_PROXY, NO_PROXY).
func (e *Egress) Transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = e.proxy
	t.DialContext = e.DialContext
	return t
}

// Client is an HTTP client for sources: through the policy, following only safe redirects.
func (e *Egress) Client() *http.Client {
	return &http.Client{Transport: e.Transport(), CheckRedirect: SameHostRedirects}
}
