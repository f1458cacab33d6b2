package main

import (
	"net/url"
	"strings"
	"testing"
)

// TestPeersAllow: a follower forwards a write only to an address SLUICE_PLANNER_PEERS lists, as a
// base URL, a host name, an address or a CIDR range; a host name is not resolved to match a range.
func TestPeersAllow(t *testing.T) {
	ps := mustPeers(t, "http://planner-0.planner:8080", "planner-1.planner.sluice.svc", "10.0.0.0/8", "fd00::/8", "192.168.1.7")
	for _, c := range []struct {
		addr  string
		allow bool
	}{
		{"http://planner-0.planner:8080", true},
		{"http://PLANNER-0.planner:8080/", true},
		{"https://planner-0.planner:8080", false}, // another scheme than listed
		{"http://planner-0.planner:9090", false},  // another port than listed
		{"http://planner-0.planner:8080/v2", false},
		{"http://planner-1.planner.sluice.svc:8080", true},
		{"https://planner-1.planner.sluice.svc", true},
		{"http://10.1.2.3:8080", true},
		{"http://[fd00::7]:8080", true},
		{"http://192.168.1.7:8080", true},
		{"http://192.168.1.8:8080", false},
		{"http://[::ffff:10.1.2.3]:8080", true},
		{"http://11.0.0.1:8080", false},
		{"http://attacker.example:8080", false},
		{"http://planner-1.planner.sluice.svc.attacker.example", false},
		{"http://user:pw@10.1.2.3:8080", false},
		{"ftp://10.1.2.3", false},
		{"10.1.2.3:8080", false},
		{"", false},
	} {
		t.Run(c.addr, func(t *testing.T) {
			u, err := url.Parse(c.addr)
			if err != nil {
				u = nil
			}
			if got := ps.allows(u); got != c.allow {
				t.Fatalf("allows(%q) = %v, want %v", c.addr, got, c.allow)
			}
		})
	}
	if none := mustPeers(t); !none.none() || none.allows(&url.URL{Scheme: "http", Host: "10.0.0.1:8080"}) {
		t.Fatal("no peers must allow nothing")
	}
}

// TestParsePeersRefuses: an entry that is no base URL, host name, address or CIDR range is
// refused, every one named.
func TestParsePeersRefuses(t *testing.T) {
	for _, entry := range []string{
		"http://user:pw@planner-0:8080",
		"http://planner-0:8080/api",
		"http://planner-0:8080?x=1",
		"ftp://planner-0",
		"http://",
		"10.0.0.0/33",
		"*.planner",
		"planner_0",
		"planner-0:8080",
	} {
		t.Run(entry, func(t *testing.T) {
			_, err := parsePeers([]string{"10.0.0.0/8", entry})
			if err == nil || !strings.Contains(err.Error(), entry) {
				t.Fatalf("parsePeers(%q) = %v, want it refused by name", entry, err)
			}
		})
	}
}
