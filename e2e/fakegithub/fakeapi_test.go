package fakegithub

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/attested-runner/attested-runner/internal/fakeclock"
)

func testJob(runID int64, repo string, labels ...string) Job {
	return Job{
		Repository: repo, Ref: "refs/heads/main", SHA: strings.Repeat("b", 40),
		WorkflowRef: repo + "/.github/workflows/build.yml@refs/heads/main", WorkflowSHA: strings.Repeat("b", 40),
		EventName: "push", Actor: "octocat", RunID: runID, Job: "build", Labels: labels,
		Actions: []ActionRef{{Repository: "actions/checkout", Ref: "v4", SHA: strings.Repeat("1", 40)}},
		Steps:   []Step{{Run: "echo hi"}},
	}
}

func runnerClient(t *testing.T, encoded string) *RunnerClient {
	t.Helper()
	cfg, err := DecodeJITConfig(encoded)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewRunnerClient(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRunnerProtocol(t *testing.T) {
	f := startFake(t, nil)
	ctx := context.Background()
	enc := mintOrg(t, f, "jit-1", "self-hosted", "attested").GetEncodedJITConfig()
	c := runnerClient(t, enc)

	if err := c.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	if ri, _ := f.srv.Runner("jit-1"); !ri.Online || ri.Busy {
		t.Errorf("after connect: %+v", ri)
	}
	// One session per JIT config.
	if err := runnerClient(t, enc).Connect(ctx); !errors.Is(err, ErrSessionConflict) {
		t.Errorf("second session: %v, want ErrSessionConflict", err)
	}
	if j, err := c.Acquire(ctx, PollParams{}); j != nil || err != nil {
		t.Fatalf("acquire on an empty queue: %+v, %v", j, err)
	}

	// A job for other labels, a job of another org, then ours.
	if _, err := f.srv.QueueJob(testJob(1, "acme/widgets", "gpu")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.srv.QueueJob(testJob(2, "other/widgets", "attested")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.srv.QueueJob(testJob(3, "acme/widgets", "Attested")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.srv.QueueJob(testJob(3, "acme/widgets", "attested")); !errors.Is(err, ErrInvalidJob) {
		t.Errorf("duplicate run id: %v", err)
	}
	j, err := c.Acquire(ctx, PollParams{})
	if err != nil || j == nil {
		t.Fatalf("acquire: %+v, %v", j, err)
	}
	if j.Job.RunID != 3 || j.Job.RepositoryID == 0 || j.Job.RunAttempt != 1 || j.LeaseSeconds != 10 {
		t.Errorf("acquired %+v", j)
	}
	if ri, _ := f.srv.Runner("jit-1"); !ri.Busy || ri.RunID != 3 {
		t.Errorf("while running: %+v", ri)
	}
	// A busy runner cannot be deleted.
	_, err = f.client.Actions.RemoveOrganizationRunner(ctx, "acme", c.RunnerID())
	var er *github.ErrorResponse
	if !errors.As(err, &er) || er.Response.StatusCode != 422 || er.Message != `Bad request - Runner "jit-1" is still running a job"` {
		t.Errorf("delete busy runner: %v", err)
	}
	if err := c.Renew(ctx, j.RequestID); err != nil {
		t.Errorf("renew: %v", err)
	}
	if err := c.Renew(ctx, j.RequestID+100); !errors.Is(err, ErrJobLost) {
		t.Errorf("renew of another request: %v", err)
	}
	if err := c.Complete(ctx, j.RequestID, ResultSucceeded); err != nil {
		t.Fatalf("complete: %v", err)
	}
	rec, ok := f.srv.JobResult(3)
	if !ok || rec.Result != ResultSucceeded || rec.RunnerName != "jit-1" || rec.RunnerID != c.RunnerID() ||
		rec.AcquiredAt.IsZero() || rec.CompletedAt.Before(rec.AcquiredAt) {
		t.Errorf("job record %+v", rec)
	}
	if rec, _ := f.srv.JobResult(1); rec.Result != "" || rec.RunnerID != 0 {
		t.Errorf("unmatched job was taken: %+v", rec)
	}
	// Ephemeral: the runner is gone and its config is spent.
	if _, ok := f.srv.Runner("jit-1"); ok {
		t.Error("runner still registered after its job")
	}
	if err := runnerClient(t, enc).Connect(ctx); !errors.Is(err, ErrRegistrationGone) {
		t.Errorf("reuse of a spent config: %v, want ErrRegistrationGone", err)
	}
	if _, err := c.Acquire(ctx, PollParams{}); !errors.Is(err, ErrRegistrationGone) {
		t.Errorf("acquire after the job: %v", err)
	}
}

func TestRunnerDeletedWhileListening(t *testing.T) {
	f := startFake(t, nil)
	ctx := context.Background()
	cfg := mintOrg(t, f, "jit-del", "attested")
	c := runnerClient(t, cfg.GetEncodedJITConfig())
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.Actions.RemoveOrganizationRunner(ctx, "acme", cfg.GetRunner().GetID()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire(ctx, PollParams{}); !errors.Is(err, ErrRegistrationGone) {
		t.Errorf("acquire after delete: %v, want ErrRegistrationGone", err)
	}
}

func TestRepoRunnerScope(t *testing.T) {
	f := startFake(t, nil)
	ctx := context.Background()
	cfg, _, err := f.client.Actions.GenerateRepoJITConfig(ctx, "acme", "widgets", &github.GenerateJITConfigRequest{Name: "r", RunnerGroupID: 1, Labels: []string{"attested"}})
	if err != nil {
		t.Fatal(err)
	}
	c := runnerClient(t, cfg.GetEncodedJITConfig())
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	f.srv.QueueJob(testJob(10, "acme/gadgets", "attested"))
	if j, err := c.Acquire(ctx, PollParams{}); j != nil || err != nil {
		t.Fatalf("repository runner took another repository's job: %+v %v", j, err)
	}
	f.srv.QueueJob(testJob(11, "acme/widgets", "attested"))
	if j, err := c.Acquire(ctx, PollParams{}); err != nil || j == nil || j.Job.RunID != 11 {
		t.Fatalf("acquire: %+v %v", j, err)
	}
}

func TestSessionReleaseAndReconnect(t *testing.T) {
	f := startFake(t, nil)
	ctx := context.Background()
	enc := mintOrg(t, f, "jit-idle", "attested").GetEncodedJITConfig()
	c := runnerClient(t, enc)
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	if ri, _ := f.srv.Runner("jit-idle"); ri.Online {
		t.Error("runner online after its session closed")
	}
	// The runner never ran a job: the same config may connect again.
	if err := runnerClient(t, enc).Connect(ctx); err != nil {
		t.Errorf("reconnect after a clean shutdown: %v", err)
	}
}

func TestLeaseExpiry(t *testing.T) {
	// Start at the real time: ghinstallation signs App JWTs with it.
	clk := fakeclock.New(time.Now())
	f := startFake(t, func(o *Options) { o.Now = clk.Now; o.JobLease = 5 * time.Second })
	ctx := context.Background()
	cfg := mintOrg(t, f, "jit-lost", "attested")
	c := runnerClient(t, cfg.GetEncodedJITConfig())
	c.now = clk.Now
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	f.srv.QueueJob(testJob(20, "acme/widgets", "attested"))
	j, err := c.Acquire(ctx, PollParams{})
	if err != nil || j == nil {
		t.Fatal(j, err)
	}
	clk.Add(4 * time.Second)
	if err := c.Renew(ctx, j.RequestID); err != nil {
		t.Fatal(err)
	}
	clk.Add(4 * time.Second)
	if rec, _ := f.srv.JobResult(20); rec.Result != "" {
		t.Fatalf("renewed job ended: %+v", rec)
	}
	clk.Add(2 * time.Second)
	rec, _ := f.srv.JobResult(20)
	if rec.Result != ResultFailed || !strings.Contains(rec.Reason, "lost communication") {
		t.Errorf("lost job: %+v", rec)
	}
	ri, ok := f.srv.Runner("jit-lost")
	if !ok || ri.Busy || ri.Online {
		t.Errorf("runner after a lost job: %+v, %v", ri, ok)
	}
	if err := c.Complete(ctx, j.RequestID, ResultSucceeded); err == nil {
		t.Error("completing a lost job succeeded")
	}
	if _, err := f.client.Actions.RemoveOrganizationRunner(ctx, "acme", cfg.GetRunner().GetID()); err != nil {
		t.Errorf("delete after the lease ran out: %v", err)
	}
}

func TestOAuthTokenRejects(t *testing.T) {
	f := startFake(t, nil)
	enc := mintOrg(t, f, "jit-oauth", "attested").GetEncodedJITConfig()
	cfg, _ := DecodeJITConfig(enc)
	other, _ := DecodeJITConfig(mintOrg(t, f, "jit-other", "attested").GetEncodedJITConfig())
	// Sign with another runner's key under this runner's client id.
	forged := *cfg
	forged.RSAParams = other.RSAParams
	c, err := NewRunnerClient(&forged, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(context.Background()); !errors.Is(err, ErrRegistrationGone) {
		t.Errorf("forged assertion: %v, want invalid_client", err)
	}
	for _, body := range []string{"", "grant_type=password", "grant_type=client_credentials&client_assertion_type=x&client_assertion=y"} {
		resp, err := http.Post(f.srv.URL()+"/_fake/oauth2/token", "application/x-www-form-urlencoded", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%q: %d, want 400", body, resp.StatusCode)
		}
	}
	// Runner calls need the runner's access token.
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL()+"/_fake/runners/"+strconv.FormatInt(cfg.Runner.AgentID, 10)+"/session", nil)
	req.Header.Set("Authorization", "Bearer nope")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("session with a bad token: %d", resp.StatusCode)
	}
}

func TestQueueJobValidation(t *testing.T) {
	f := startFake(t, nil)
	ok := testJob(30, "acme/widgets", "x")
	bad := []func(*Job){
		func(j *Job) { j.Repository = "widgets" },
		func(j *Job) { j.SHA = "abc" },
		func(j *Job) { j.Ref = "main" },
		func(j *Job) { j.Labels = nil },
		func(j *Job) { j.Steps = nil },
		func(j *Job) { j.Steps = []Step{{Run: "x", Uses: "./a"}} },
		func(j *Job) { j.Actions = []ActionRef{{Repository: "actions/checkout", Ref: "v4", SHA: "v4"}} },
		func(j *Job) { j.Actions = []ActionRef{{Repository: "actions/checkout/sub", Ref: "v4", SHA: sha40}} },
		func(j *Job) { j.Actions = []ActionRef{{Repository: "actions/checkout", Ref: "v4\nx", SHA: sha40}} },
		func(j *Job) {
			j.Actions = []ActionRef{{Repository: "a/b", Ref: "v1", SHA: sha40, Package: &ActionPackage{ManifestDigest: digest64}}}
		},
		func(j *Job) {
			j.Actions = []ActionRef{{Repository: "a/b", Ref: "v1", SHA: sha40, Package: &ActionPackage{Version: "1.0.0", ManifestDigest: "sha256:abc"}}}
		},
		func(j *Job) {
			j.Actions = []ActionRef{{Repository: "a/b", Ref: "v1", SHA: sha40, Package: &ActionPackage{Version: "1\n2", ManifestDigest: digest64}}}
		},
		func(j *Job) {
			j.Actions = []ActionRef{{Repository: "a/b", Ref: "v1", SHA: sha40, Package: &ActionPackage{Version: "1", ManifestDigest: "sha256:" + strings.Repeat("zz", 32)}}}
		},
		func(j *Job) {
			j.Actions = []ActionRef{{Repository: "a/b", Ref: "v1", SHA: sha40, Package: &ActionPackage{Version: "1.0.0", ManifestDigest: "sha512:" + digest64[7:]}}}
		},
		func(j *Job) { j.EventPayload = []byte("{") },
		func(j *Job) { j.RunID = 0 },
	}
	for i, mutate := range bad {
		j := ok
		mutate(&j)
		if _, err := f.srv.QueueJob(j); !errors.Is(err, ErrInvalidJob) {
			t.Errorf("case %d: %v, want ErrInvalidJob", i, err)
		}
	}
	if _, err := f.srv.QueueJob(ok); err != nil {
		t.Errorf("valid job: %v", err)
	}
	pkg := testJob(31, "acme/widgets", "x")
	pkg.Actions = []ActionRef{{Repository: "a/b", Ref: "v1", SHA: sha40, Package: &ActionPackage{Version: "1.0.0", ManifestDigest: digest64}}}
	if _, err := f.srv.QueueJob(pkg); err != nil {
		t.Errorf("valid job with an immutable action package: %v", err)
	}
}

var (
	sha40    = strings.Repeat("1", 40)
	digest64 = "sha256:" + strings.Repeat("ab", 32)
)
