package jobgate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v62/github"
)

// Registry is what the gate needs from GitHub: single-use runners.
type Registry interface {
	// Mint creates a JIT runner and returns its id and encoded config.
	// workFolder, if set, is its work folder (else the registry's default).
	Mint(ctx context.Context, name string, labels []string, workFolder string) (id int64, encodedJIT string, err error)
	// Remove deletes a runner; a runner already gone is not an error.
	Remove(ctx context.Context, id int64) error
	// List returns the scope's runners.
	List(ctx context.Context) ([]GitHubRunner, error)
}

// GitHubRunner is a runner as GitHub lists it.
type GitHubRunner struct {
	ID     int64
	Name   string
	Status string
	Busy   bool
}

// ErrRunnerBusy: GitHub refuses to remove a runner while it runs a job
// (422); it frees the runner when the job ends (or its lease is lost).
var ErrRunnerBusy = errors.New("GitHub says the runner is still running a job")

// ErrRunnerNameTaken: GitHub already has a runner of that name.
var ErrRunnerNameTaken = errors.New("runner name already exists on GitHub")

// GitHubRegistry talks to GitHub (or GitHub Enterprise Server) as a GitHub
// App installation, in one scope: an organization or a repository.
type GitHubRegistry struct {
	client        *github.Client
	apps          *ghinstallation.AppsTransport
	installation  int64
	org           string // org scope
	owner, repo   string // repository scope
	runnerGroupID int64
	workFolder    string
	rt            *retryTransport
}

// GitHubOptions configure a GitHubRegistry.
type GitHubOptions struct {
	// APIURL is the REST API base (https://api.github.com/ or
	// https://ghes.example.com/api/v3/).
	APIURL         string
	AppID          int64
	InstallationID int64
	// PrivateKey is the App's PEM private key. It stays in memory.
	PrivateKey []byte
	// Exactly one of Org or Repository (owner/name).
	Org, Repository string
	RunnerGroupID   int64
	// WorkFolder, if set, is every JIT runner's work folder.
	WorkFolder string
	// Transport is the base HTTP transport (tests inject one).
	Transport http.RoundTripper
	// Observe is told the status of every GitHub response (0: no response).
	Observe func(status int)
	// Retry bounds: attempts per request and the longest wait for a rate
	// limit reset. Zero values: 4 attempts, 60 s.
	Attempts     int
	MaxRateLimit time.Duration
}

// NewGitHubRegistry builds the App installation client. No request is made.
func NewGitHubRegistry(o GitHubOptions) (*GitHubRegistry, error) {
	if (o.Org == "") == (o.Repository == "") {
		return nil, errors.New("github: set exactly one of org and repository")
	}
	base := o.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	apiURL := o.APIURL
	if apiURL == "" {
		apiURL = "https://api.github.com/"
	}
	if !strings.HasSuffix(apiURL, "/") {
		apiURL += "/"
	}
	rt := &retryTransport{next: base, attempts: o.Attempts, maxWait: o.MaxRateLimit, observe: o.Observe}
	apps, err := ghinstallation.NewAppsTransport(rt, o.AppID, o.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("github app key: %w", err)
	}
	apps.BaseURL = strings.TrimSuffix(apiURL, "/")
	itr := ghinstallation.NewFromAppsTransport(apps, o.InstallationID)
	itr.BaseURL = apps.BaseURL
	client := github.NewClient(&http.Client{Transport: itr, Timeout: 60 * time.Second})
	if apiURL != "https://api.github.com/" {
		if client, err = client.WithEnterpriseURLs(apiURL, apiURL); err != nil {
			return nil, err
		}
		// WithEnterpriseURLs appends /api/v3/ unless present; a test server
		// at the root needs the URL as given.
		client.BaseURL, _ = client.BaseURL.Parse(apiURL)
	}
	r := &GitHubRegistry{client: client, apps: apps, installation: o.InstallationID, org: o.Org, runnerGroupID: o.RunnerGroupID, workFolder: o.WorkFolder, rt: rt}
	if o.Repository != "" {
		owner, repo, ok := strings.Cut(o.Repository, "/")
		if !ok || owner == "" || repo == "" || strings.Contains(repo, "/") {
			return nil, fmt.Errorf("github: repository %q is not owner/name", o.Repository)
		}
		r.owner, r.repo = owner, repo
	}
	if r.runnerGroupID == 0 {
		r.runnerGroupID = 1 // the Default group
	}
	return r, nil
}

// Mint implements Registry. The name is derived from the environment key,
// so a retried request that GitHub had already served collides (409) instead
// of creating a second runner; Mint then removes the first and mints again,
// so at most one runner per admission ever exists.
func (g *GitHubRegistry) Mint(ctx context.Context, name string, labels []string, workFolder string) (int64, string, error) {
	id, jit, err := g.mint(ctx, name, labels, workFolder)
	if !errors.Is(err, ErrRunnerNameTaken) {
		return id, jit, err
	}
	old, lerr := g.findByName(ctx, name)
	if lerr != nil {
		return 0, "", fmt.Errorf("%w; looking it up: %v", err, lerr)
	}
	if old != nil {
		if err := g.Remove(ctx, old.ID); err != nil {
			return 0, "", fmt.Errorf("removing stale runner %s: %w", name, err)
		}
	}
	return g.mint(ctx, name, labels, workFolder)
}

func (g *GitHubRegistry) mint(ctx context.Context, name string, labels []string, workFolder string) (int64, string, error) {
	req := &github.GenerateJITConfigRequest{Name: name, RunnerGroupID: g.runnerGroupID, Labels: labels}
	if workFolder == "" {
		workFolder = g.workFolder
	}
	if workFolder != "" {
		req.WorkFolder = github.String(workFolder)
	}
	var cfg *github.JITRunnerConfig
	var resp *github.Response
	var err error
	if g.org != "" {
		cfg, resp, err = g.client.Actions.GenerateOrgJITConfig(ctx, g.org, req)
	} else {
		cfg, resp, err = g.client.Actions.GenerateRepoJITConfig(ctx, g.owner, g.repo, req)
	}
	if err != nil {
		// GitHub answers a taken name with 409 "Already exists - A runner
		// with the name ... already exists." (422 on some versions).
		if resp != nil && (resp.StatusCode == http.StatusConflict || resp.StatusCode == http.StatusUnprocessableEntity) &&
			strings.Contains(strings.ToLower(err.Error()), "already exists") {
			return 0, "", fmt.Errorf("%w: %s", ErrRunnerNameTaken, name)
		}
		return 0, "", fmt.Errorf("generating JIT runner config: %w", err)
	}
	if cfg.GetRunner().GetID() == 0 || cfg.GetEncodedJITConfig() == "" {
		return 0, "", errors.New("generating JIT runner config: empty response")
	}
	return cfg.GetRunner().GetID(), cfg.GetEncodedJITConfig(), nil
}

func (g *GitHubRegistry) findByName(ctx context.Context, name string) (*GitHubRunner, error) {
	all, err := g.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range all {
		if r.Name == name {
			return &r, nil
		}
	}
	return nil, nil
}

// Remove implements Registry.
func (g *GitHubRegistry) Remove(ctx context.Context, id int64) error {
	var resp *github.Response
	var err error
	if g.org != "" {
		resp, err = g.client.Actions.RemoveOrganizationRunner(ctx, g.org, id)
	} else {
		resp, err = g.client.Actions.RemoveRunner(ctx, g.owner, g.repo, id)
	}
	if err != nil && resp != nil && resp.StatusCode == http.StatusNotFound {
		return nil
	}
	if err != nil && resp != nil && resp.StatusCode == http.StatusUnprocessableEntity {
		return fmt.Errorf("removing runner %d: %w: %v", id, ErrRunnerBusy, err)
	}
	if err != nil {
		return fmt.Errorf("removing runner %d: %w", id, err)
	}
	return nil
}

// List implements Registry (all pages).
func (g *GitHubRegistry) List(ctx context.Context) ([]GitHubRunner, error) {
	var out []GitHubRunner
	opts := &github.ListRunnersOptions{ListOptions: github.ListOptions{PerPage: 100}}
	for {
		var rs *github.Runners
		var resp *github.Response
		var err error
		if g.org != "" {
			rs, resp, err = g.client.Actions.ListOrganizationRunners(ctx, g.org, opts)
		} else {
			rs, resp, err = g.client.Actions.ListRunners(ctx, g.owner, g.repo, opts)
		}
		if err != nil {
			return nil, fmt.Errorf("listing runners: %w", err)
		}
		for _, r := range rs.Runners {
			out = append(out, GitHubRunner{ID: r.GetID(), Name: r.GetName(), Status: r.GetStatus(), Busy: r.GetBusy()})
		}
		if resp.NextPage == 0 || len(out) > 100000 {
			return out, nil
		}
		opts.Page = resp.NextPage
	}
}

// CheckResult is one finding of Check.
type CheckResult struct {
	Name   string
	OK     bool
	Detail string
}

// Check verifies the App credentials, the installation and its permissions
// against the API without minting anything, and says precisely what is
// missing.
func (g *GitHubRegistry) Check(ctx context.Context) []CheckResult {
	var out []CheckResult
	add := func(name string, ok bool, format string, args ...any) {
		out = append(out, CheckResult{name, ok, fmt.Sprintf(format, args...)})
	}
	appClient := g.appClient()
	app, _, err := appClient.Apps.Get(ctx, "")
	if err != nil {
		add("app credentials", false, "GET /app with the App JWT failed: %v (check the App id and private key)", err)
		return out
	}
	add("app credentials", true, "App %q (id %d)", app.GetName(), app.GetID())
	inst, _, err := appClient.Apps.GetInstallation(ctx, g.installation)
	if err != nil {
		add("installation", false, "GET /app/installations/%d failed: %v (is the App installed, and is this its installation id?)", g.installation, err)
		return out
	}
	account := inst.GetAccount().GetLogin()
	want := g.org
	if want == "" {
		want = g.owner
	}
	add("installation", strings.EqualFold(account, want), "installation %d is on %q (want %q)", g.installation, account, want)
	perms := inst.GetPermissions()
	if g.org != "" {
		p := perms.GetOrganizationSelfHostedRunners()
		add("permission", p == "write", "organization \"Self-hosted runners\": %q (need \"write\")", p)
	} else {
		p := perms.GetAdministration()
		add("permission", p == "write", "repository \"Administration\": %q (need \"write\")", p)
	}
	if _, err := g.List(ctx); err != nil {
		add("list runners", false, "listing runners with the installation token failed: %v", err)
	} else {
		add("list runners", true, "the installation token can list the scope's runners")
	}
	return out
}

// retryTransport retries GitHub requests that failed for reasons that can
// pass: transport errors, 5xx, and rate limits (429, or 403 with
// X-RateLimit-Remaining: 0 or Retry-After), honouring Retry-After and
// X-RateLimit-Reset up to maxWait. Bounded: a failing GitHub costs at most
// attempts requests. POSTs are retried too: JIT minting is made idempotent
// by unique runner names (see Mint).
type retryTransport struct {
	next     http.RoundTripper
	attempts int
	maxWait  time.Duration
	observe  func(status int)
	sleep    func(context.Context, time.Duration) error

	installationRequests, appRequests atomic.Int64

	mu          sync.Mutex
	remaining   int
	reset       time.Time
	budgetKnown bool
}

// note counts a request and, for an installation request, records the
// quota GitHub states in its response.
func (t *retryTransport) note(req *http.Request, resp *http.Response) {
	if !strings.HasPrefix(req.Header.Get("Authorization"), "token ") {
		t.appRequests.Add(1)
		return
	}
	t.installationRequests.Add(1)
	if resp == nil {
		return
	}
	rem, err1 := strconv.Atoi(resp.Header.Get("X-RateLimit-Remaining"))
	reset, err2 := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64)
	if err1 != nil || err2 != nil || resp.Header.Get("X-RateLimit-Resource") != "core" && resp.Header.Get("X-RateLimit-Resource") != "" {
		return
	}
	t.mu.Lock()
	t.remaining, t.reset, t.budgetKnown = rem, time.Unix(reset, 0), true
	t.mu.Unlock()
}

func (t *retryTransport) budget() (int, time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.remaining, t.reset, t.budgetKnown
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	attempts := t.attempts
	if attempts <= 0 {
		attempts = 4
	}
	maxWait := t.maxWait
	if maxWait <= 0 {
		maxWait = 60 * time.Second
	}
	sleep := t.sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	for i := 0; ; i++ {
		r := req
		if i > 0 {
			if req.Body != nil && req.GetBody == nil {
				return nil, errors.New("github: cannot retry a request whose body cannot be replayed")
			}
			r = req.Clone(req.Context())
			if req.GetBody != nil {
				body, err := req.GetBody()
				if err != nil {
					return nil, err
				}
				r.Body = body
			}
		}
		resp, err := t.next.RoundTrip(r)
		t.note(r, resp)
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		if t.observe != nil {
			t.observe(status)
		}
		wait, retry := retryAfter(resp, err, i, maxWait)
		if !retry || i+1 >= attempts {
			return resp, err
		}
		if resp != nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		if err := sleep(req.Context(), wait); err != nil {
			return nil, err
		}
	}
}

// retryAfter decides whether to retry and how long to wait first.
func retryAfter(resp *http.Response, err error, attempt int, maxWait time.Duration) (time.Duration, bool) {
	backoff := time.Duration(200<<attempt) * time.Millisecond
	if backoff > 5*time.Second {
		backoff = 5 * time.Second
	}
	backoff = backoff/2 + time.Duration(rand.Int64N(int64(backoff/2)+1))
	if err != nil {
		return backoff, true
	}
	switch {
	case resp.StatusCode >= 500:
		return backoff, true
	case resp.StatusCode == http.StatusTooManyRequests,
		resp.StatusCode == http.StatusForbidden && (resp.Header.Get("Retry-After") != "" || resp.Header.Get("X-RateLimit-Remaining") == "0"):
		wait := backoff
		if s := resp.Header.Get("Retry-After"); s != "" {
			if n, err := strconv.Atoi(s); err == nil {
				wait = time.Duration(n) * time.Second
			}
		} else if s := resp.Header.Get("X-RateLimit-Reset"); s != "" {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				wait = time.Until(time.Unix(n, 0)) + time.Second
			}
		}
		if wait > maxWait {
			return 0, false // give up now rather than block past any caller's deadline
		}
		if wait < 0 {
			wait = 0
		}
		return wait, true
	}
	return 0, false
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// WebhookDelivery is one of the App's webhook deliveries as GitHub
// recorded it.
type WebhookDelivery struct {
	ID          int64
	GUID        string // the X-GitHub-Delivery header
	Event       string
	Action      string
	DeliveredAt time.Time
	Payload     []byte // nil in lists; set by Delivery
}

// maxDeliveryPages bounds a delivery listing (100 per page).
const maxDeliveryPages = 3

// RecentDeliveries lists the App's webhook deliveries since a time for this
// installation, newest first (GET /app/hook/deliveries with the App JWT:
// App requests do not spend the installation's quota). One request unless
// more than 100 deliveries happened since.
func (g *GitHubRegistry) RecentDeliveries(ctx context.Context, since time.Time) ([]WebhookDelivery, error) {
	app := g.appClient()
	var out []WebhookDelivery
	opts := &github.ListCursorOptions{PerPage: 100}
	for range maxDeliveryPages {
		ds, resp, err := app.Apps.ListHookDeliveries(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("listing webhook deliveries: %w", err)
		}
		for _, d := range ds {
			at := d.GetDeliveredAt().Time
			if at.Before(since) {
				return out, nil
			}
			if d.GetInstallationID() != g.installation {
				continue
			}
			out = append(out, WebhookDelivery{ID: d.GetID(), GUID: d.GetGUID(), Event: d.GetEvent(), Action: d.GetAction(), DeliveredAt: at})
		}
		if resp.Cursor == "" || len(ds) == 0 {
			return out, nil
		}
		opts.Cursor = resp.Cursor
	}
	return out, nil
}

// maxDeliveryPayload bounds a delivery's payload (a workflow_job payload is
// a few KiB).
const maxDeliveryPayload = 1 << 20

// Delivery fetches one delivery with its payload (GET
// /app/hook/deliveries/{id}).
func (g *GitHubRegistry) Delivery(ctx context.Context, id int64) (*WebhookDelivery, error) {
	d, _, err := g.appClient().Apps.GetHookDelivery(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("fetching webhook delivery %d: %w", id, err)
	}
	if d.GetInstallationID() != g.installation {
		return nil, fmt.Errorf("webhook delivery %d is for installation %d, not %d", id, d.GetInstallationID(), g.installation)
	}
	if d.Request == nil || d.Request.RawPayload == nil {
		return nil, fmt.Errorf("webhook delivery %d has no payload", id)
	}
	if len(*d.Request.RawPayload) > maxDeliveryPayload {
		return nil, fmt.Errorf("webhook delivery %d: payload over %d bytes", id, maxDeliveryPayload)
	}
	return &WebhookDelivery{ID: d.GetID(), GUID: d.GetGUID(), Event: d.GetEvent(), Action: d.GetAction(),
		DeliveredAt: d.GetDeliveredAt().Time, Payload: []byte(*d.Request.RawPayload)}, nil
}

// appClient is a client authenticated as the App (JWT), for /app endpoints.
func (g *GitHubRegistry) appClient() *github.Client {
	c := github.NewClient(&http.Client{Transport: g.apps, Timeout: 30 * time.Second})
	c.BaseURL = g.client.BaseURL
	return c
}

// Budget reports the installation token's remaining request quota and its
// reset time as GitHub last stated them (X-RateLimit-Remaining and -Reset
// on installation requests); known is false before any such response.
func (g *GitHubRegistry) Budget() (remaining int, reset time.Time, known bool) {
	return g.rt.budget()
}

// Requests counts the GitHub requests made so far: with the installation
// token and with the App JWT (token creation, /app endpoints).
func (g *GitHubRegistry) Requests() (installation, app int64) {
	return g.rt.installationRequests.Load(), g.rt.appRequests.Load()
}
