package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// fakeResolver answers from a table; no test here asks a real resolver or leaves this machine.
type fakeResolver map[string][]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	addrs, ok := f[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, a := range addrs {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

// TestEgressRanges checks the default policy and the allowlist on addresses as values.
func TestEgressRanges(t *testing.T) {
	def, err := ParseEgress(nil)
	if err != nil {
		t.Fatal(err)
	}
	allowing, err := ParseEgress([]string{"127.0.0.1", "10.20.0.0/16", "fd00::1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		addr, rangeName string
		allowed         bool // by the allowlist above
	}{
		{"93.184.216.34", "", true},
		{"2606:2800:220:1:248:1893:25c8:1946", "", true},
		{"127.0.0.1", "loopback", true},
		{"127.1.2.3", "loopback", false},
		{"::1", "loopback", false},
		{"::ffff:127.0.0.1", "loopback", true},
		{"10.0.0.1", "private", false},
		{"10.20.3.4", "private", true},
		{"172.16.0.1", "private", false},
		{"172.31.255.255", "private", false},
		{"172.32.0.1", "", true},
		{"192.168.1.1", "private", false},
		{"fd00::1", "private", true},
		{"fd00::2", "private", false},
		{"169.254.169.254", "link-local", false},
		{"fe80::1", "link-local", false},
		{"100.64.0.1", "shared (carrier-grade NAT)", false},
		{"224.0.0.1", "multicast", false},
		{"239.255.255.250", "multicast", false},
		{"ff02::1", "multicast", false},
		{"0.0.0.0", "unspecified", false},
		{"::", "unspecified", false},
		{"255.255.255.255", "reserved", false},
		{"::1%lo", "loopback", false},
		{"fe80::1%eth0", "link-local", false},
		{"64:ff9b::a9fe:a9fe", "link-local (through NAT64 or 6to4)", false},
		{"64:ff9b::5db8:d822", "", true},
		{"2002:7f00:1::1", "loopback (through NAT64 or 6to4)", true},
		{"2001:0:4136:e378::1", "reserved", false},
		{"::7f00:1", "reserved", false},
		{"fec0::1", "private", false},
		{"168.63.129.16", "cloud platform", false},
	} {
		a := netip.MustParseAddr(c.addr)
		err := def.CheckAddr(c.addr, a)
		var ee *EgressError
		switch {
		case c.rangeName == "" && err != nil:
			t.Errorf("%s refused by default: %v", c.addr, err)
		case c.rangeName != "" && (!errors.As(err, &ee) || ee.Range != c.rangeName || !errors.Is(err, ErrEgress)):
			t.Errorf("%s: %v, want refused as %s", c.addr, err, c.rangeName)
		}
		if got := allowing.CheckAddr(c.addr, a) == nil; got != c.allowed {
			t.Errorf("%s with the allowlist: allowed %v, want %v", c.addr, got, c.allowed)
		}
	}
}

// TestEgressNames resolves names through a fake resolver: a name is refused when any of its
// addresses is, unless the allowlist names it.
func TestEgressNames(t *testing.T) {
	e, err := ParseEgress([]string{"db.internal", "*.corp.example"})
	if err != nil {
		t.Fatal(err)
	}
	e.Resolver = fakeResolver{
		"api.example.com":    {"93.184.216.34"},
		"metadata.evil":      {"169.254.169.254"},
		"mixed.evil":         {"93.184.216.34", "10.0.0.1"},
		"v6.evil":            {"fd12::1"},
		"mapped.evil":        {"::ffff:192.168.0.1"},
		"db.internal":        {"10.1.2.3"},
		"build.corp.example": {"192.168.9.9"},
		"corp.example":       {"192.168.9.10"},
	}
	for host, want := range map[string]string{
		"api.example.com":    "",
		"metadata.evil":      "metadata.evil resolves to a link-local address",
		"mixed.evil":         "mixed.evil resolves to a private address",
		"v6.evil":            "private",
		"mapped.evil":        "mapped.evil resolves to a private address",
		"db.internal":        "",
		"DB.Internal.":       "",
		"build.corp.example": "",
		"corp.example":       "private",
		"169.254.169.254":    "169.254.169.254 is a link-local address",
		"[::1]":              "::1 is a loopback address",
	} {
		if host == "DB.Internal." {
			e.Resolver.(fakeResolver)[host] = []string{"10.1.2.3"}
		}
		_, err := e.Resolve(context.Background(), host)
		switch {
		case want == "" && err != nil:
			t.Errorf("%s refused: %v", host, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrEgress)):
			t.Errorf("%s: %v, want an egress error with %q", host, err, want)
		}
	}
	if _, err := ParseEgress([]string{"10.0.0.0/33", "a b", "*.", "ok.example"}); err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Fatalf("bad allowlist entries: %v", err)
	}
}

// TestEgressDial dials through the policy: a loopback listener not allowed counts no connection, and
// a name that resolves to it is refused too; allowed, the same listener answers.
func TestEgressDial(t *testing.T) {
	var conns atomic.Int32
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	ts.Start()
	defer ts.Close()
	port := ts.URL[strings.LastIndexByte(ts.URL, ':')+1:]

	refusing, _ := ParseEgress(nil)
	refusing.Resolver = fakeResolver{"rebound.test": {"127.0.0.1"}}
	for _, u := range []string{ts.URL, "http://rebound.test:" + port + "/"} {
		resp, err := refusing.Client().Get(u)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("%s: answered %s through a policy that refuses loopback", u, resp.Status)
		}
		if !errors.Is(err, ErrEgress) || strings.Contains(err.Error(), "refused") && !strings.Contains(err.Error(), "SLUICE_SOURCE_ALLOW") {
			t.Fatalf("%s: %v, want an egress error", u, err)
		}
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("the listener counted %d connections through a policy that refuses it", n)
	}

	allowing, _ := ParseEgress([]string{"127.0.0.1"})
	allowing.Resolver = fakeResolver{"rebound.test": {"127.0.0.1"}}
	resp, err := allowing.Client().Get("http://rebound.test:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || conns.Load() != 1 {
		t.Fatalf("allowed: %s, %d connections", resp.Status, conns.Load())
	}
	if _, err := allowing.DialContext(context.Background(), "unix", "/run/postgresql/.s.PGSQL.5432"); !errors.Is(err, ErrEgress) {
		t.Fatalf("a Unix socket: %v", err)
	}
}

// TestRedirects refuses redirects to another host and from https to http.
func TestRedirects(t *testing.T) {
	req := func(u string) *http.Request { r, _ := http.NewRequest("GET", u, nil); return r }
	for _, c := range []struct {
		from, to string
		ok       bool
	}{
		{"http://a.example/x", "http://a.example/y", true},
		{"http://a.example/x", "https://a.example/y", true},
		{"https://a.example/x", "https://a.example/y", true},
		{"https://a.example/x", "http://a.example/y", false},
		{"https://a.example/x", "https://b.example/y", false},
	} {
		err := SameHostRedirects(req(c.to), []*http.Request{req(c.from)})
		if (err == nil) != c.ok {
			t.Errorf("%s -> %s: %v", c.from, c.to, err)
		}
	}
}

// TestRaceDial connects to the first address that answers, and fails only when none does.
func TestRaceDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	d := &net.Dialer{}
	conn, err := raceDial(context.Background(), d, "tcp", port, []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatalf("one address answers: %v", err)
	}
	if got := conn.RemoteAddr().String(); got != ln.Addr().String() {
		t.Fatalf("connected to %s", got)
	}
	conn.Close()
	ln.Close()
	if _, err := raceDial(context.Background(), d, "tcp", port, []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")}); err == nil {
		t.Fatal("no address answers, and the dial succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := raceDial(ctx, d, "tcp", port, []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.1")}); err == nil {
		t.Fatal("a canceled dial succeeded")
	}
}

// TestOnlyEgress: a PostgreSQL connect error is egress only when the policy refused every host.
func TestOnlyEgress(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: &EgressError{Host: "10.0.0.1", Range: "private"}}
	unreachable := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	if !onlyEgress(fmt.Errorf("connect: %w", refused)) || !onlyEgress(errors.Join(refused, refused)) {
		t.Fatal("refused hosts are not egress")
	}
	if onlyEgress(errors.Join(refused, unreachable)) || onlyEgress(unreachable) {
		t.Fatal("an unreachable host counted as egress")
	}
}

// TestEgressProxy goes through the configured proxy, on an address the allowlist names, to a host
// whose addresses the policy allows; a host that resolves to a refused address, or is one written in
// any numeric form, is refused before the proxy hears of it, and a name this process cannot resolve
// is left to the proxy. A proxy on a refused address that the allowlist does not name is refused too.
func TestEgressProxy(t *testing.T) {
	var asked []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = append(asked, r.URL.Host) // a forward proxy is asked for the absolute URL
		_, _ = w.Write([]byte("via proxy"))
	}))
	defer proxy.Close()
	proxyURL, _ := url.Parse(proxy.URL)
	e, _ := ParseEgress([]string{"127.0.0.1"})
	e.Resolver = fakeResolver{"api.example.test": {"93.184.216.34"}, "internal.test": {"10.0.0.1"}}
	e.Proxy = func(*http.Request) (*url.URL, error) { return proxyURL, nil }
	for _, c := range []struct {
		url     string
		proxied bool
	}{
		{"http://api.example.test/users", true},
		{"http://internal.test/users", false},
		{"http://only-the-proxy-knows.test/users", true},
		{"http://1572395042/users", true}, // 93.184.216.34
		{"http://2130706434/users", false},
		{"http://0x7f.2/users", false},
		{"http://017700000002/users", false},
		{"http://0177.0.0.02/users", false},
		{"http://0x0a.0.0.1/users", false},
		{"http://167772161/users", false}, // 10.0.0.1
		{"http://012.0.0.1/users", false}, // 10.0.0.1 as octal, 12.0.0.1 as decimal
		{"http://[::ffff:7f00:2]/users", false},
		{"http://[::ffff:10.0.0.1]/users", false},
		{"http://127.0.0.2./users", false},
	} {
		before := len(asked)
		resp, err := e.Client().Get(c.url)
		if c.proxied {
			if err != nil {
				t.Fatalf("%s through the proxy: %v", c.url, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "via proxy" || len(asked) != before+1 {
				t.Fatalf("%s: %q, proxy asked %v", c.url, body, asked)
			}
			continue
		}
		if err == nil {
			resp.Body.Close()
			t.Fatalf("%s: answered through the proxy", c.url)
		}
		if !errors.Is(err, ErrEgress) || len(asked) != before {
			t.Fatalf("%s: %v, proxy asked %v", c.url, err, asked)
		}
	}

	// The same proxy, which the allowlist does not name: its address is checked like any other, also
	// after requests went through it in another client.
	strict, _ := ParseEgress(nil)
	strict.Resolver, strict.Proxy = e.Resolver, e.Proxy
	before := len(asked)
	resp, err := strict.Client().Get("http://api.example.test/users")
	if err == nil {
		resp.Body.Close()
		t.Fatal("went through a proxy on a loopback address the allowlist does not name")
	}
	if !errors.Is(err, ErrEgress) || len(asked) != before {
		t.Fatalf("a proxy on a refused address: %v, proxy asked %v", err, asked[before:])
	}
}

// TestNumericHosts reads every numeric form of an address as inet_aton does, and as decimal where
// a leading zero makes the two differ; names are no address.
func TestNumericHosts(t *testing.T) {
	for _, c := range []struct {
		host string
		want []string
	}{
		{"127.0.0.1", []string{"127.0.0.1"}},
		{"2130706433", []string{"127.0.0.1"}},
		{"0x7f000001", []string{"127.0.0.1"}},
		{"0X7F.1", []string{"127.0.0.1"}},
		{"0x7f.0.1", []string{"127.0.0.1"}},
		{"017700000001", []string{"127.0.0.1"}}, // read as decimal it overflows
		{"0177.0.0.1", []string{"127.0.0.1", "177.0.0.1"}},
		{"127.1", []string{"127.0.0.1"}},
		{"127.0.0.1.", []string{"127.0.0.1"}},
		{"10.0.0.010", []string{"10.0.0.8", "10.0.0.10"}},
		{"08.0.0.1", []string{"8.0.0.1"}},
		{"::ffff:127.0.0.1", []string{"127.0.0.1"}},
		{"fe80::1%eth0", []string{"fe80::1"}},
		{"4294967295", []string{"255.255.255.255"}},
		{"4294967296", nil},
		{"256.0.0.1", nil},
		{"1.2.3.4.5", nil},
		{"1..2", nil},
		{"0x", nil},
		{"-1", nil},
		{"+1", nil},
		{"api.example.com", nil},
		{"0x7f.example", nil},
		{"", nil},
	} {
		var got []string
		for _, a := range numericHost(c.host) {
			got = append(got, a.String())
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("numericHost(%q) = %v, want %v", c.host, got, c.want)
		}
	}
}
