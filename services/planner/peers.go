package main

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// peers are the addresses a follower may forward a write to, its caller's token with it
// (SLUICE_PLANNER_PEERS). The leader's address comes from the lease topic, which is no proof of
// anything: whoever can write that topic can name any address there. A follower forwards only to an
// address the operator listed; with none listed it forwards nothing.
type peers struct {
	// urls are base URLs (scheme://host[:port], no path), matched exactly.
	urls []*url.URL
	// hosts are host names or addresses, matched against the URL's host on any port.
	hosts []string
	// nets are ranges that an address written as an IP literal must fall in; a host name is not
	// resolved to be checked against them.
	nets []netip.Prefix
}

// parsePeers reads SLUICE_PLANNER_PEERS: base URLs (http://planner-0.planner:8080), host names
// (planner-0.planner), addresses (10.0.0.7) and CIDR ranges (10.0.0.0/8). It reports every entry
// it cannot read.
func parsePeers(entries []string) (peers, error) {
	var ps peers
	var errs []error
	for _, entry := range entries {
		entry = strings.ToLower(strings.TrimSpace(entry))
		switch {
		case entry == "":
		case strings.Contains(entry, "://"):
			u, err := url.Parse(entry)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil ||
				strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
				errs = append(errs, fmt.Errorf("%q is not a base URL such as http://planner-0.planner:8080 (http or https, no credentials, no path)", entry))
				continue
			}
			u.Path = ""
			ps.urls = append(ps.urls, u)
		case strings.Contains(entry, "/"):
			p, err := netip.ParsePrefix(entry)
			if err != nil {
				errs = append(errs, fmt.Errorf("%q is not a CIDR range", entry))
				continue
			}
			ps.nets = append(ps.nets, p.Masked())
		default:
			if a, err := netip.ParseAddr(strings.Trim(entry, "[]")); err == nil {
				a = a.Unmap()
				ps.nets = append(ps.nets, netip.PrefixFrom(a, a.BitLen()))
				continue
			}
			if !isHostName(entry) {
				errs = append(errs, fmt.Errorf("%q is not a base URL, a host name, an address or a CIDR range", entry))
				continue
			}
			ps.hosts = append(ps.hosts, entry)
		}
	}
	return ps, errors.Join(errs...)
}

// isHostName reports whether s is a DNS name: labels of letters, digits and hyphens.
func isHostName(s string) bool {
	for label := range strings.SplitSeq(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}

// none reports whether no peer is listed: the follower forwards nothing.
func (ps peers) none() bool { return len(ps.urls) == 0 && len(ps.hosts) == 0 && len(ps.nets) == 0 }

// allows reports whether a write may be forwarded to u: an http(s) URL without credentials whose
// base URL, host or IP literal is listed.
func (ps peers) allows(u *url.URL) bool {
	if u == nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil || u.Hostname() == "" {
		return false
	}
	host := strings.ToLower(u.Hostname())
	for _, p := range ps.urls {
		if p.Scheme == strings.ToLower(u.Scheme) && p.Host == strings.ToLower(u.Host) && strings.Trim(u.Path, "/") == "" {
			return true
		}
	}
	for _, h := range ps.hosts {
		if strings.TrimSuffix(h, ".") == strings.TrimSuffix(host, ".") {
			return true
		}
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Zone() == "" {
		a = a.Unmap()
		for _, n := range ps.nets {
			if n.Contains(a) {
				return true
			}
		}
	}
	return false
}

// String describes the peers for the start-up log.
func (ps peers) String() string {
	if ps.none() {
		return "no other planner (writes to a follower are answered 503 with Retry-After)"
	}
	var out []string
	for _, u := range ps.urls {
		out = append(out, u.String())
	}
	out = append(out, ps.hosts...)
	for _, n := range ps.nets {
		out = append(out, n.String())
	}
	return strings.Join(out, ", ")
}
