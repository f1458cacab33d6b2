package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/pipeline"
)

// Error is a page that could not be had: its class (a small fixed set, used as the dead-letter
// class and a metric label), whether trying again may help, and what the source last said.
type Error struct {
	// Class is one of bad_request, network, timeout, canceled, truncated, too_large, http_429,
	// http_5xx, http_408, http_4xx, bad_json, short_page, config, bad_task, egress, redirect.
	Class      string
	Retryable  bool
	Status     int
	Head       []byte
	RetryAfter time.Duration
	// At is the place of the page in its slice and Attempts the requests it took, when a reader
	// gave up on it.
	At       uint64
	Attempts int
	Err      error
	// Diagnostic is what only this process's log may show: a database's whole message with its
	// DETAIL and WHERE, which may quote rows. Err never carries it.
	Diagnostic string
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// classified is e for the delivery retrier: what may pass is transient, the rest is data.
func (e *Error) classified() error {
	class := delivery.Data
	if e.Retryable {
		class = delivery.Transient
	}
	return &delivery.Error{Class: class, Reason: e.Class, RetryAfter: e.RetryAfter, Err: e}
}

// ResponseHeadBytes is how much of a failed response a dead letter keeps.
const ResponseHeadBytes = 512

// Fetcher gets pages over HTTP with a per-request timeout and a cap on the body size.
type Fetcher struct {
	Client  *http.Client
	MaxBody int64
	// MaxRecords caps the records of one page (0: no cap); a page over it fails with class
	// page_too_large, not retried.
	MaxRecords int
	Metrics    *Metrics
	// Retry runs the attempts at a page, and counts its retries with every other operation's.
	Retry *delivery.Retrier
	Now   func() time.Time
	// Observe, when set, hears the status and headers of every response, by host: what a rate
	// limit learns from (429, Retry-After, RateLimit-Remaining).
	Observe func(host string, status int, header http.Header)
}

// get makes one request. It returns the body of a 2xx response, else a classified error. Errors
// never carry the URL, which may hold credentials in its query.
func (f *Fetcher) get(ctx context.Context, u string, headers map[string]string, timeout time.Duration) ([]byte, http.Header, *Error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, &Error{Class: "bad_request", Err: fmt.Errorf("build request: %w", stripURL(err))}
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Accept", "application/json")
	began := f.Now()
	resp, err := f.Client.Do(req)
	if err != nil {
		f.Metrics.Pages.WithLabelValues("error").Inc()
		return nil, nil, transportError(ctx, err)
	}
	defer resp.Body.Close()
	if f.Observe != nil {
		f.Observe(req.URL.Host, resp.StatusCode, resp.Header)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, f.MaxBody+1))
	f.Metrics.PageSeconds.Observe(time.Since(began).Seconds())
	f.Metrics.Pages.WithLabelValues(statusClass(resp.StatusCode)).Inc()
	if err != nil {
		fe := transportError(ctx, err)
		fe.Status = resp.StatusCode
		if errors.Is(err, io.ErrUnexpectedEOF) {
			fe.Class = "truncated"
			fe.Err = fmt.Errorf("response body truncated after %d bytes: %w", len(body), stripURL(err))
		}
		return nil, nil, fe
	}
	if int64(len(body)) > f.MaxBody {
		return nil, nil, &Error{Class: "too_large", Status: resp.StatusCode, Head: head(body),
			Err: fmt.Errorf("response body larger than %d bytes", f.MaxBody)}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return body, resp.Header, nil
	}
	fe := &Error{Status: resp.StatusCode, Head: head(body),
		Err: fmt.Errorf("source answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		fe.Class, fe.Retryable = "http_429", true
		fe.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), f.Now())
	case resp.StatusCode == http.StatusServiceUnavailable:
		fe.Class, fe.Retryable = "http_5xx", true
		fe.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), f.Now())
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusRequestTimeout:
		fe.Class, fe.Retryable = "http_5xx", true
		if resp.StatusCode == http.StatusRequestTimeout {
			fe.Class = "http_408"
		}
	default:
		fe.Class = "http_4xx"
	}
	return nil, nil, fe
}

// transportError classifies a failure below HTTP: timeouts, resets, refused connections.
func transportError(ctx context.Context, err error) *Error {
	var nerr net.Error
	var eerr *EgressError
	switch {
	case errors.As(err, &eerr):
		return &Error{Class: "egress", Err: eerr}
	case errors.Is(err, ErrRedirect):
		return &Error{Class: "redirect", Err: stripURL(err)}
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil, errors.As(err, &nerr) && nerr.Timeout():
		return &Error{Class: "timeout", Retryable: true, Err: fmt.Errorf("request timed out: %w", stripURL(err))}
	case errors.Is(err, context.Canceled):
		return &Error{Class: "canceled", Err: stripURL(err)}
	default:
		return &Error{Class: "network", Retryable: true, Err: fmt.Errorf("request failed: %w", stripURL(err))}
	}
}

// stripURL removes the URL that net/http puts in its errors.
func stripURL(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return fmt.Errorf("%s: %w", uerr.Op, uerr.Err)
	}
	return err
}

// retryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func head(body []byte) []byte {
	if len(body) > ResponseHeadBytes {
		body = body[:ResponseHeadBytes]
	}
	return append([]byte(nil), body...)
}

func statusClass(code int) string {
	switch {
	case code >= 200 && code < 300:
		return "2xx"
	case code >= 300 && code < 400:
		return "3xx"
	case code >= 400 && code < 500:
		return "4xx"
	default:
		return "5xx"
	}
}

// Policy is how one page is retried: attempts, backoff and the overall deadline.
type Policy struct {
	MaxRetries int
	Backoff    pipeline.Backoff
	// Deadline bounds all attempts at one page, waits included; Timeout bounds one request.
	Deadline time.Duration
	Timeout  time.Duration
}

// FetchPage gets and parses one page, retrying what may pass: 5xx, 408, 429 (waiting at least its
// Retry-After), timeouts, resets, truncated and unparseable bodies. It returns the page, the attempts
// made, and the last error when it gave up.
func (f *Fetcher) FetchPage(ctx context.Context, u string, headers map[string]string, recordsPath, totalPath string, pol Policy) (Page, int, *Error) {
	var (
		page Page
		last *Error
	)
	attempts, err := f.Retry.Do(ctx, "fetch", delivery.Policy{Backoff: pol.Backoff, MaxAttempts: pol.MaxRetries + 1, Deadline: pol.Deadline},
		func(int) error {
			body, header, ferr := f.get(ctx, u, headers, pol.Timeout)
			if ferr == nil {
				p, err := ParsePage(body, recordsPath, totalPath, f.MaxRecords)
				switch {
				case err == nil:
					p.Body, p.Header = body, header
					page = p
					return nil
				case errors.Is(err, ErrTooManyRecords):
					ferr = &Error{Class: "page_too_large", Status: http.StatusOK, Head: head(body), Err: err}
				default:
					ferr = &Error{Class: "bad_json", Retryable: true, Status: http.StatusOK, Head: head(body), Err: err}
				}
			}
			last = ferr
			return ferr.classified()
		})
	switch {
	case err == nil:
		return page, attempts, nil
	case ctx.Err() != nil:
		return Page{}, attempts, &Error{Class: "canceled", Err: ctx.Err()}
	case errors.Is(err, delivery.ErrDeadline):
		last.Err = fmt.Errorf("%w; the next retry would pass the page deadline of %s", last.Err, pol.Deadline)
	}
	return Page{}, attempts, last
}
