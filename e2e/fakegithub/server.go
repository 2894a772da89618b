package fakegithub

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-github/v62/github"
)

// MaxRequestBody bounds every request body; a larger one gets 413.
const MaxRequestBody = 1 << 20

// maxCalls bounds the call log; past it the oldest half is dropped (the
// counters behind JITMints and RunnerDeletes stay exact).
const maxCalls = 1 << 16

// Options configures a fake. AppPublicKey, AppID and InstallationID are
// required, and at least one of Org and Repos.
type Options struct {
	// AppID is the GitHub App id the JWT's iss must name.
	AppID int64
	// AppSlug defaults to "attested-runner-fake".
	AppSlug string
	// AppPublicKey verifies App JWTs (RS256).
	AppPublicKey *rsa.PublicKey
	// InstallationID is the App's one installation.
	InstallationID int64
	// Org is the organization the installation is on ("" for none).
	Org string
	// Repos are "owner/name" repositories the installation can reach. With
	// Org set they must belong to it.
	Repos []string
	// Account is the installation's account login; it defaults to Org, or
	// to the owner of Repos[0].
	Account string
	// TargetType defaults to "Organization" with Org set, else "User".
	TargetType string
	// Permissions of the installation. Nil means
	// organization_self_hosted_runners: write, administration: write,
	// metadata: read.
	Permissions *github.InstallationPermissions
	// RunnerGroups maps runner group ids to names; nil means {1: "Default"}.
	RunnerGroups map[int64]string
	// RunnerKeyBits is the size of each runner's RSA key. Real runners get
	// 2048-bit keys; the default here is 1024 so that tests mint in
	// milliseconds. The key is a real secret either way.
	RunnerKeyBits int
	// JobLease is how long a running job survives without a renewal from
	// its runner before the fake fails it, marks the runner offline and
	// lets it be deleted. Default 10 s (GitHub: minutes).
	JobLease time.Duration
	// PublicURL is the base URL written into JIT configs. Empty means the
	// scheme and host of the request that minted the config.
	PublicURL string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Jobs are queued at start.
	Jobs []Job
	// LatestRunnerVersion and MinRunnerVersion are the initial values of
	// SetRunnerVersions.
	LatestRunnerVersion, MinRunnerVersion string
}

// Call is one request the fake answered.
type Call struct {
	Method string
	// Path is the request path without a leading /api/v3.
	Path  string
	Query string
	// Status is the HTTP status sent, or 0 when the fake dropped the
	// connection (Down).
	Status int
	Time   time.Time
}

// Server is a fake GitHub REST API plus the fake-only runner endpoints under
// /_fake/. It is an http.Handler and safe for concurrent use.
type Server struct {
	opts       Options
	now        func() time.Time
	mux        *http.ServeMux
	repoIDs    map[string]int64 // lower-case owner/name -> id
	repoNames  map[string]string
	publicURL  string
	httpServer *http.Server
	listener   net.Listener
	serveDone  chan error

	mu             sync.Mutex
	updateMessages int // update messages sent to outdated runners
	// latestRunner, minRunner, ignoreDisableUpdate: see SetRunnerVersions.
	latestRunner, minRunner string
	ignoreDisableUpdate     bool
	perms                   github.InstallationPermissions
	tokens                  map[[32]byte]*installToken
	runners                 map[int64]*runnerState
	runnerNames             map[string]int64 // scope key + "\x00" + lower name -> id
	clientIDs               map[string]int64
	accessTokens            map[[32]byte]*accessToken
	nextRunnerID            int64
	nextLabelID             int64
	labelIDs                map[string]int64
	queue                   []*jobState
	jobs                    map[int64]*jobState
	nextRequest             int64
	calls                   []Call
	mints                   int
	deletes                 int
	faults                  []*Fault
	jobTokens               map[[32]byte]*jobToken
	attestations            []*attestation
	nextAttestation         int64
	latency                 time.Duration
	down                    bool
	requestHook             func(method, path string)
	requestSeq              int64
	rate                    map[int64]*rateWindow
	// The App's webhook (webhooks.go).
	hookURL      string
	hookSecret   []byte
	hookQueue    chan *WebhookDelivery
	hookStop     chan struct{}
	hookDrop     int
	hookDup      bool
	hookLog      []*WebhookDelivery
	nextDelivery int64
	nextJobID    int64
}

// New validates opts and returns a fake that is not yet listening; serve it
// with any http.Server (or use Start / ListenAndServe).
func New(opts Options) (*Server, error) {
	if opts.AppPublicKey == nil {
		return nil, errors.New("fakegithub: AppPublicKey is required")
	}
	if opts.AppID <= 0 || opts.InstallationID <= 0 {
		return nil, errors.New("fakegithub: AppID and InstallationID must be positive")
	}
	if opts.Org == "" && len(opts.Repos) == 0 {
		return nil, errors.New("fakegithub: configure an Org or at least one repository")
	}
	s := &Server{
		opts:         opts,
		now:          opts.Now,
		repoIDs:      map[string]int64{},
		repoNames:    map[string]string{},
		tokens:       map[[32]byte]*installToken{},
		runners:      map[int64]*runnerState{},
		runnerNames:  map[string]int64{},
		clientIDs:    map[string]int64{},
		accessTokens: map[[32]byte]*accessToken{},
		nextRunnerID: 1000,
		nextLabelID:  100,
		labelIDs:     map[string]int64{},
		jobs:         map[int64]*jobState{},
		rate:         map[int64]*rateWindow{},
		latestRunner: opts.LatestRunnerVersion,
		minRunner:    opts.MinRunnerVersion,
	}
	if s.now == nil {
		s.now = time.Now
	}
	for i, full := range opts.Repos {
		owner, name, ok := strings.Cut(full, "/")
		if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
			return nil, fmt.Errorf("fakegithub: repository %q is not owner/name", full)
		}
		if opts.Org != "" && !strings.EqualFold(owner, opts.Org) {
			return nil, fmt.Errorf("fakegithub: repository %q is not in organization %q", full, opts.Org)
		}
		if opts.Org == "" && !strings.EqualFold(owner, strings.Split(opts.Repos[0], "/")[0]) {
			return nil, fmt.Errorf("fakegithub: repositories of an installation share one owner")
		}
		s.repoIDs[strings.ToLower(full)] = int64(700000001 + i)
		s.repoNames[strings.ToLower(full)] = full
	}
	if s.opts.AppSlug == "" {
		s.opts.AppSlug = "attested-runner-fake"
	}
	if s.opts.Account == "" {
		if opts.Org != "" {
			s.opts.Account = opts.Org
		} else {
			s.opts.Account = strings.Split(opts.Repos[0], "/")[0]
		}
	}
	if s.opts.TargetType == "" {
		s.opts.TargetType = "User"
		if opts.Org != "" {
			s.opts.TargetType = "Organization"
		}
	}
	if s.opts.TargetType != "Organization" && s.opts.TargetType != "User" {
		return nil, fmt.Errorf("fakegithub: TargetType %q, want Organization or User", s.opts.TargetType)
	}
	if s.opts.TargetType == "User" && opts.Org != "" {
		return nil, errors.New("fakegithub: a User installation has no organization")
	}
	if opts.Permissions != nil {
		s.perms = *opts.Permissions
	} else {
		s.perms = github.InstallationPermissions{
			OrganizationSelfHostedRunners: github.String("write"),
			Administration:                github.String("write"),
			Metadata:                      github.String("read"),
		}
	}
	if s.opts.RunnerGroups == nil {
		s.opts.RunnerGroups = map[int64]string{1: "Default"}
	}
	if s.opts.RunnerKeyBits == 0 {
		s.opts.RunnerKeyBits = 1024
	}
	if s.opts.RunnerKeyBits < MinRunnerKeyBits || s.opts.RunnerKeyBits > MaxRunnerKeyBits {
		return nil, fmt.Errorf("fakegithub: RunnerKeyBits %d out of range", s.opts.RunnerKeyBits)
	}
	if s.opts.JobLease == 0 {
		s.opts.JobLease = 10 * time.Second
	}
	if opts.PublicURL != "" {
		if !absoluteURL(opts.PublicURL) {
			return nil, fmt.Errorf("fakegithub: PublicURL %q is not an absolute URL", opts.PublicURL)
		}
		s.publicURL = strings.TrimRight(opts.PublicURL, "/")
	}
	s.routes()
	for _, j := range opts.Jobs {
		if _, err := s.QueueJob(j); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Start serves a new fake on a loopback port until Close.
func Start(opts Options) (*Server, error) { return Listen("127.0.0.1:0", opts) }

// Listen serves a new fake on addr until Close. Unless opts.PublicURL is
// set, JIT configs name http://<the bound address>.
func Listen(addr string, opts Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if opts.PublicURL == "" {
		opts.PublicURL = "http://" + ln.Addr().String()
	}
	s, err := New(opts)
	if err != nil {
		ln.Close()
		return nil, err
	}
	s.listener = ln
	s.httpServer = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.serveDone = make(chan error, 1)
	go func() { s.serveDone <- s.httpServer.Serve(ln) }()
	return s, nil
}

// ListenAndServe serves a fake on addr until ctx is done. ready, if not nil,
// is called with the running server (to print its URL or queue jobs).
func ListenAndServe(ctx context.Context, addr string, opts Options, ready func(*Server)) error {
	s, err := Listen(addr, opts)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(s)
	}
	select {
	case <-ctx.Done():
		return s.Close()
	case err := <-s.serveDone:
		return err
	}
}

// URL is the fake's base URL ("" for a server made by New and not yet
// serving a request). Point go-github at URL()+"/api/v3/" (or at URL()+"/")
// and ghinstallation at URL().
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.publicURL
}

// Close stops a server started by Start or Listen.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.hookStop != nil {
		close(s.hookStop)
		s.hookStop, s.hookQueue = nil, nil
	}
	s.mu.Unlock()
	if s.httpServer == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.httpServer.Shutdown(ctx)
	if err != nil {
		err = s.httpServer.Close()
	}
	return err
}

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /app", s.handleGetApp)
	m.HandleFunc("GET /app/installations/{installation_id}", s.handleGetInstallation)
	m.HandleFunc("POST /app/installations/{installation_id}/access_tokens", s.handleAccessToken)
	m.HandleFunc("GET /app/hook/deliveries", s.handleListHookDeliveries)
	m.HandleFunc("GET /app/hook/deliveries/{delivery_id}", s.handleGetHookDelivery)

	m.HandleFunc("POST /orgs/{org}/actions/runners/generate-jitconfig", s.handleGenerateJIT)
	m.HandleFunc("POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig", s.handleGenerateJIT)
	m.HandleFunc("GET /orgs/{org}/actions/runners", s.handleListRunners)
	m.HandleFunc("GET /repos/{owner}/{repo}/actions/runners", s.handleListRunners)
	m.HandleFunc("GET /orgs/{org}/actions/runners/{runner_id}", s.handleGetRunner)
	m.HandleFunc("GET /repos/{owner}/{repo}/actions/runners/{runner_id}", s.handleGetRunner)
	m.HandleFunc("DELETE /orgs/{org}/actions/runners/{runner_id}", s.handleDeleteRunner)
	m.HandleFunc("DELETE /repos/{owner}/{repo}/actions/runners/{runner_id}", s.handleDeleteRunner)

	m.HandleFunc("POST /repos/{owner}/{repo}/attestations", s.handleCreateAttestation)
	m.HandleFunc("GET /repos/{owner}/{repo}/attestations/{subject_digest}", s.handleListAttestations)
	m.HandleFunc("GET /orgs/{org}/attestations/{subject_digest}", s.handleListAttestations)
	m.HandleFunc("GET /_fake/attestations/{id}/bundle", s.handleAttestationBundle)

	m.HandleFunc("POST /_fake/oauth2/token", s.handleOAuthToken)
	m.HandleFunc("POST /_fake/runners/{runner_id}/session", s.handleCreateSession)
	m.HandleFunc("DELETE /_fake/runners/{runner_id}/session", s.handleDeleteSession)
	m.HandleFunc("POST /_fake/runners/{runner_id}/acquire", s.handleAcquire)
	m.HandleFunc("POST /_fake/runners/{runner_id}/renew", s.handleRenew)
	m.HandleFunc("POST /_fake/runners/{runner_id}/complete", s.handleComplete)

	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "Not Found", docREST)
	})
	s.mux = m
}

// originalPathKey holds the request path as the client sent it (with
// /api/v3), for Link headers.
type originalPathKey struct{}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// discardWriter runs a handler for its side effects only (Fault.AfterApply).
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }

// ServeHTTP serves the fake: connection faults, latency, injected faults,
// the body limit, then the routes; every request is recorded.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	if strings.HasPrefix(r.URL.Path, "/api/v3/") || r.URL.Path == "/api/v3" {
		r2 := r.Clone(context.WithValue(r.Context(), originalPathKey{}, r.URL.EscapedPath()))
		r2.URL.Path = strings.TrimPrefix(r.URL.Path, "/api/v3")
		if r2.URL.Path == "" {
			r2.URL.Path = "/"
		}
		r2.URL.RawPath = ""
		r = r2
	}
	s.mu.Lock()
	if s.publicURL == "" {
		s.publicURL = requestBaseURL(r)
	}
	down, latency, hook := s.down, s.latency, s.requestHook
	s.requestSeq++
	reqID := s.requestSeq
	s.mu.Unlock()
	if hook != nil {
		hook(r.Method, strings.TrimPrefix(r.URL.Path, "/api/v3"))
	}

	if down {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				s.record(r, 0, start)
				return
			}
		}
		writeError(w, http.StatusServiceUnavailable, "Service Unavailable", docREST)
		s.record(r, http.StatusServiceUnavailable, start)
		return
	}
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			s.record(r, 0, start)
			return
		}
	}
	w.Header().Set("X-GitHub-Request-Id", fmt.Sprintf("FAKE:%08X", reqID))
	w.Header().Set("X-GitHub-Media-Type", "github.v3; format=json")
	w.Header().Set("X-GitHub-Api-Version-Selected", "2022-11-28")
	r.Body = http.MaxBytesReader(w, r.Body, MaxRequestBody)

	if f := s.takeFault(r); f != nil {
		if f.AfterApply {
			s.mux.ServeHTTP(&discardWriter{h: http.Header{}}, r)
		}
		s.writeFault(w, f, reqID)
		s.record(r, f.Status, start)
		return
	}
	rec := &statusRecorder{ResponseWriter: w}
	s.mux.ServeHTTP(rec, r)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	s.record(r, rec.status, start)
}

func (s *Server) record(r *http.Request, status int, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.calls) >= maxCalls {
		s.calls = append(s.calls[:0], s.calls[maxCalls/2:]...)
	}
	s.calls = append(s.calls, Call{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Status: status, Time: t})
}

// Calls returns the requests answered so far, oldest first.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// CountCalls counts recorded calls with this method ("" for any) whose path
// starts with pathPrefix and whose status is status (0 for any).
func (s *Server) CountCalls(method, pathPrefix string, status int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.calls {
		if (method == "" || c.Method == method) && strings.HasPrefix(c.Path, pathPrefix) && (status == 0 || c.Status == status) {
			n++
		}
	}
	return n
}

// JITMints counts runners created by either generate-jitconfig, including
// those whose response a FailNextAfterApply fault replaced.
func (s *Server) JITMints() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mints
}

// RunnerDeletes counts runners deleted through the REST API.
func (s *Server) RunnerDeletes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deletes
}

// RepositoryID is the id the fake gives a configured repository.
func (s *Server) RepositoryID(fullName string) (int64, bool) {
	id, ok := s.repoIDs[strings.ToLower(fullName)]
	return id, ok
}

// SetPermissions changes the installation's permissions. Tokens already
// issued keep the permissions they were issued with, as on GitHub.
func (s *Server) SetPermissions(p github.InstallationPermissions) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.perms = p
}

func requestBaseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// Documentation URLs used in error bodies, as GitHub sends them.
const (
	docREST       = "https://docs.github.com/rest"
	docRunners    = "https://docs.github.com/rest/actions/self-hosted-runners"
	docOrgJIT     = "https://docs.github.com/rest/actions/self-hosted-runners#create-configuration-for-a-just-in-time-runner-for-an-organization"
	docRepoJIT    = "https://docs.github.com/rest/actions/self-hosted-runners#create-configuration-for-a-just-in-time-runner-for-a-repository"
	docAppToken   = "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app"
	docSecondary  = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
	docPrimary    = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-the-primary-rate-limit"
	docJWTAuthApp = "https://docs.github.com/apps/building-github-apps/authenticating-with-github-apps#authenticating-as-a-github-app"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes GitHub's error shape (go-github's ErrorResponse).
func writeError(w http.ResponseWriter, status int, msg, doc string) {
	writeJSON(w, status, &github.ErrorResponse{Message: msg, DocumentationURL: doc})
}

// readBody reads a body bounded by MaxRequestBody; it writes 413 or 400 and
// returns false on failure.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.Body == nil {
		return nil, true
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "Request body too large", docREST)
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "Problems reading the request body", docREST)
		return nil, false
	}
	return b, true
}

// decodeRequest decodes a JSON object body the way GitHub validates one:
// 400 "Problems parsing JSON" for bad JSON, 422 for a key outside allowed or
// a missing required key, 413 for an oversized body. An empty body is {}.
func decodeRequest(w http.ResponseWriter, r *http.Request, allowed, required []string, v any, doc string) bool {
	body, ok := readBody(w, r)
	if !ok {
		return false
	}
	if strings.TrimSpace(string(body)) == "" {
		body = []byte("{}")
	}
	// A JSON null counts as {} (ghinstallation sends "null" when it has no
	// token options, and GitHub accepts it).
	var raw map[string]json.RawMessage
	if err := decodeJSONStrict(body, &raw); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON", doc)
		return false
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !contains(allowed, k) {
			writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("Invalid request.\n\n%s is not a permitted key.", strconv.Quote(safeName(k))), doc)
			return false
		}
	}
	for _, k := range required {
		if _, ok := raw[k]; !ok {
			writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("Invalid request.\n\n%q wasn't supplied.", k), doc)
			return false
		}
	}
	if err := json.Unmarshal(body, v); err != nil {
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n"+typeErrorText(err), doc)
		return false
	}
	return true
}

func typeErrorText(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("For '%s', %s is not %s.", te.Field, te.Value, jsonTypeName(te.Type.Kind().String()))
	}
	return "Invalid input."
}

func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	case "int", "int64", "int32", "uint", "uint64":
		return "an integer"
	case "bool":
		return "a boolean"
	default:
		return "an object"
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func parseID(s string) (int64, bool) {
	id, err := strconv.ParseInt(s, 10, 64)
	return id, err == nil && id > 0
}
