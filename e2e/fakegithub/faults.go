package fakegithub

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Fault makes the next Count requests that match Method ("" for any) and
// PathPrefix (matched against the path without /api/v3) fail with Status.
type Fault struct {
	Method     string
	PathPrefix string
	Count      int
	Status     int
	// RetryAfter, for 403 and 429, makes the fault a secondary rate limit:
	// a Retry-After header (whole seconds, rounded up) and GitHub's
	// secondary-rate-limit message and documentation URL.
	RetryAfter time.Duration
	// RateLimitReset, for 403 and 429, makes the fault a primary rate
	// limit: X-RateLimit-Remaining: 0 and X-RateLimit-Reset this far ahead.
	RateLimitReset time.Duration
	// AfterApply runs the request (its effects happen: a runner is created
	// or deleted) and then answers with the fault, as GitHub sometimes does
	// when a request fails after it took effect.
	AfterApply bool
}

// Inject queues a fault. Faults are matched in the order injected.
func (s *Server) Inject(f Fault) {
	if f.Count <= 0 || f.Status < 400 || f.Status > 599 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := f
	s.faults = append(s.faults, &c)
}

// FailNext makes the next n requests matching method ("" for any) and
// pathPrefix fail with status. For 403 and 429 a positive retryAfter makes
// it a secondary rate limit with a Retry-After header; use Inject with
// RateLimitReset for a primary rate limit (X-RateLimit-Remaining: 0).
func (s *Server) FailNext(method, pathPrefix string, n int, status int, retryAfter time.Duration) {
	s.Inject(Fault{Method: method, PathPrefix: pathPrefix, Count: n, Status: status, RetryAfter: retryAfter})
}

// FailNextAfterApply is FailNext for requests that take effect and still
// answer with an error (the "created it, then said 502" case).
func (s *Server) FailNextAfterApply(method, pathPrefix string, n int, status int) {
	s.Inject(Fault{Method: method, PathPrefix: pathPrefix, Count: n, Status: status, AfterApply: true})
}

// ClearFaults drops every pending fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// SetLatency delays every later request by d before it is handled.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// SetRequestHook calls h (nil: nothing) with every request's method and
// path (without /api/v3) as it arrives, before it is handled: a test acts
// at an exact point of a client's exchange (e.g. kills the gate while its
// runner is being minted).
func (s *Server) SetRequestHook(h func(method, path string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requestHook = h
}

// Down makes every request fail at the connection level (the fake closes
// the connection without answering: clients see EOF or a reset) until
// Down(false). Use FailNext for HTTP-level 5xx answers.
func (s *Server) Down(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

func (s *Server) takeFault(r *http.Request) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if (f.Method == "" || strings.EqualFold(f.Method, r.Method)) && strings.HasPrefix(r.URL.Path, f.PathPrefix) {
			c := *f
			f.Count--
			if f.Count <= 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
			return &c
		}
	}
	return nil
}

func (s *Server) writeFault(w http.ResponseWriter, f *Fault, reqID int64) {
	now := s.now()
	rateLimited := f.Status == http.StatusForbidden || f.Status == http.StatusTooManyRequests
	switch {
	case rateLimited && f.RateLimitReset > 0:
		reset := now.Add(f.RateLimitReset)
		w.Header().Set("X-RateLimit-Limit", "5000")
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Used", "5000")
		w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(ceilUnix(reset), 10))
		w.Header().Set("X-RateLimit-Resource", "core")
		writeError(w, f.Status, fmt.Sprintf("API rate limit exceeded for installation ID %d. If you reach out to GitHub Support for help, please include the request ID FAKE:%08X and timestamp %s.",
			s.opts.InstallationID, reqID, now.UTC().Format("2006-01-02 15:04:05 UTC")), docPrimary)
	case rateLimited && f.RetryAfter > 0:
		secs := int64((f.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		writeError(w, f.Status, fmt.Sprintf("You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID FAKE:%08X.", reqID), docSecondary)
	default:
		msg := http.StatusText(f.Status)
		switch f.Status {
		case http.StatusInternalServerError:
			msg = "Server Error"
		case http.StatusGatewayTimeout:
			msg = "We couldn't respond to your request in time. Sorry about that. Please try resubmitting your request and contact us if the problem persists."
		}
		if msg == "" {
			msg = "Error"
		}
		writeError(w, f.Status, msg, docREST)
	}
}

func ceilUnix(t time.Time) int64 {
	u := t.Unix()
	if t.Nanosecond() > 0 {
		u++
	}
	return u
}

// rateWindow is an installation's primary rate limit window, reported on
// every authenticated REST answer as GitHub does.
type rateWindow struct {
	start time.Time
	used  int
}

const rateLimitPerHour = 5000

// countRate counts one request against the installation and sets the
// X-RateLimit-* headers. Caller holds s.mu.
func (s *Server) countRate(w http.ResponseWriter, installationID int64) {
	now := s.now()
	rw := s.rate[installationID]
	if rw == nil || now.Sub(rw.start) >= time.Hour {
		rw = &rateWindow{start: now}
		s.rate[installationID] = rw
	}
	if rw.used < rateLimitPerHour-1 {
		rw.used++
	}
	w.Header().Set("X-RateLimit-Limit", strconv.Itoa(rateLimitPerHour))
	w.Header().Set("X-RateLimit-Remaining", strconv.Itoa(rateLimitPerHour-rw.used))
	w.Header().Set("X-RateLimit-Used", strconv.Itoa(rw.used))
	w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(rw.start.Add(time.Hour).Unix(), 10))
	w.Header().Set("X-RateLimit-Resource", "core")
}
