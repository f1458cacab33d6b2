package source

import (
	"errors"
	"fmt"
	"net/http"
)

// ErrRedirect is a redirect the sources' clients refuse to follow; it is never retried.
var ErrRedirect = errors.New("refused a redirect")

// SameHostRedirects is an http.Client CheckRedirect that follows at most five redirects, and only
// to the same host and never from https to http: custom headers (API keys) would otherwise go along
// to another host, or in clear text.
func SameHostRedirects(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return fmt.Errorf("%w: stopped after 5 redirects", ErrRedirect)
	}
	if req.URL.Host != via[0].URL.Host {
		return fmt.Errorf("%w to another host: the source's headers would go there", ErrRedirect)
	}
	for _, v := range via {
		if v.URL.Scheme == "https" && req.URL.Scheme != "https" {
			return fmt.Errorf("%w from https to http: the source's headers would go in clear text", ErrRedirect)
		}
	}
	return nil
}
