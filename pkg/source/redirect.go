package source

import (
	"errors"
	"net/http"
)

// SameHostRedirects is an http.Client CheckRedirect that follows at most five redirects, and only
// to the same host: custom headers (API keys) would otherwise go along to another host.
func SameHostRedirects(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("stopped after 5 redirects")
	}
	if req.URL.Host != via[0].URL.Host {
		return errors.New("refused a redirect to another host: the source's headers would go there")
	}
	return nil
}
