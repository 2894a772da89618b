package runner_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/internal/fakesigstore"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/runner"
	"github.com/sigstore/sigstore-go/pkg/bundle"
)

// syncBuffer collects the agent's log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// keylessWorld is a world whose gate policy names a local Sigstore, and a
// token service that hands the job a token for workflow (what GitHub's
// runner does when the workflow grants id-token: write).
type keylessWorld struct {
	*world
	ss       *fakesigstore.Sigstore
	token    string
	agentLog *syncBuffer
}

const idRequestToken = "id-token-request-credential"

func newKeylessWorld(t *testing.T, mint func(server string) fakesigstore.Workflow) *keylessWorld {
	return newKeylessWorldG(t, mint, true)
}

// newKeylessWorldG: gateSigstore false leaves policy.sigstore unset.
func newKeylessWorldG(t *testing.T, mint func(server string) fakesigstore.Workflow, gateSigstore bool) *keylessWorld {
	t.Helper()
	ss := fakesigstore.New(t)
	kw := &keylessWorld{ss: ss, agentLog: &syncBuffer{}}
	collector, policy := attesttest.SimulatedTPM(t)
	w := newWorldB(t, policy, func(c *jobgate.Config) {
		if gateSigstore {
			c.Policy.Sigstore = &gateapi.Sigstore{FulcioURL: ss.Fulcio.URL, RekorURL: ss.Rekor.URL, OIDCIssuer: ss.Issuer.URL}
		}
	})
	w.cfg.Collector = collector
	kw.world = w
	server := strings.TrimSuffix(w.gh.URL(), "/")
	ss.Fulcio.ServerURL = server
	kw.token = ss.Issuer.WorkflowToken(t, mint(server))
	w.cfg.Log = slog.New(slog.NewTextHandler(kw.agentLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return kw
}

// tokenService serves ACTIONS_ID_TOKEN_REQUEST_URL.
func (kw *keylessWorld) tokenService(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+idRequestToken || r.URL.Query().Get("audience") != fakesigstore.Audience {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"count": 1, "value": kw.token})
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/_apis/pipelines/workflows/1/idtoken?api-version=2.0"
}

// grantIDToken is the step that stands for permissions: id-token: write:
// the variables the runner then sets, for the steps after it.
func grantIDToken(url string) fakegithub.Step {
	return fakegithub.Step{Name: "id-token: write", Run: `echo "ACTIONS_ID_TOKEN_REQUEST_URL=` + url + `" >> "$GITHUB_ENV" && echo "ACTIONS_ID_TOKEN_REQUEST_TOKEN=` + idRequestToken + `" >> "$GITHUB_ENV"`}
}

func workflowFor(job fakegithub.Job) func(string) fakesigstore.Workflow {
	return func(server string) fakesigstore.Workflow {
		return fakesigstore.Workflow{
			ServerURL: server, Repository: job.Repository, Ref: job.Ref, SHA: job.SHA, WorkflowRef: job.WorkflowRef, WorkflowSHA: job.WorkflowSHA,
			RunID: strconv.FormatInt(job.RunID, 10), RunAttempt: strconv.Itoa(job.RunAttempt), EventName: job.EventName,
			RunnerEnvironment: provenance.RunnerEnvironmentSelfHosted,
		}
	}
}

// assertTokenNowhere: the OIDC token reached neither the agent's logs nor
// any file the agent or the job left.
func (kw *keylessWorld) assertTokenNowhere(t *testing.T) {
	t.Helper()
	if strings.Contains(kw.agentLog.String(), kw.token) {
		t.Error("the OIDC token is in the agent's log")
	}
	for _, dir := range []string{kw.runnerDir, kw.cfg.StateDir} {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(kw.token)) {
				t.Errorf("the OIDC token is in %s", p)
			}
			return nil
		})
	}
}

// TestKeylessLifecycle: a job granted id-token: write gets a keyless
// bundle (Fulcio certificate for the environment key, Rekor entry) that
// verifies the Sigstore way and still carries the hardware evidence.
func TestKeylessLifecycle(t *testing.T) {
	job := releaseJob(601)
	kw := newKeylessWorld(t, workflowFor(job))
	job.Steps = append([]fakegithub.Step{grantIDToken(kw.tokenService(t))}, buildAndAttest()...)
	if _, err := kw.gh.QueueJob(job); err != nil {
		t.Fatal(err)
	}
	a, err := runner.New(kw.cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := a.Run(context.Background())
	if res, ok := kw.gh.JobResult(601); !ok || res.Result != "succeeded" || out.Reason != "job completed" {
		t.Fatalf("job %+v, outcome %+v\nagent log:\n%s", res, out, kw.agentLog.String())
	}
	ws := filepath.Join(kw.runnerDir, "_work", "app", "app")
	raw, err := os.ReadFile(filepath.Join(ws, "dist", "app.tar.gz.sigstore.json"))
	if err != nil {
		t.Fatal(err)
	}
	var b bundle.Bundle
	if err := b.UnmarshalJSON(raw); err != nil {
		t.Fatal(err)
	}
	if vc, err := b.VerificationContent(); err != nil || vc.Certificate() == nil || len(b.GetVerificationMaterial().GetTlogEntries()) != 1 {
		t.Fatalf("not a keyless bundle (%v)", err)
	}
	art, _ := os.ReadFile(filepath.Join(ws, "dist", "app.tar.gz"))
	d := sha256.Sum256(art)
	r, err := provenance.Verify(raw, d[:], provenance.VerifyOptions{
		ExpectedRepository: "octo-org/app", ExpectedServerURL: strings.TrimSuffix(kw.gh.URL(), "/"), ExpectedRunID: "601",
		TrustedGateRoots: []crypto.PublicKey{kw.gateKey.Public()}, AllowSoftwareTPMInsecure: true,
		TrustedSigstore: kw.ss.TrustedRoot(t), ExpectedCertIssuer: kw.ss.Issuer.URL,
	})
	if err != nil {
		t.Fatalf("verify: %v\n%+v", err, r.Checks)
	}
	if r.Claims == nil || r.Claims.Lifecycle.BuildID != r.BuildID {
		t.Errorf("hardware evidence not checked: %+v", r.Claims)
	}
	kw.assertTokenNowhere(t)
}

// TestKeylessRefusesAnotherJobsToken: a job that hands over a token for
// another ref (or any other workflow identity) gets no bundle at all, and
// nothing reaches the log.
func TestKeylessRefusesAnotherJobsToken(t *testing.T) {
	job := releaseJob(602)
	kw := newKeylessWorld(t, func(server string) fakesigstore.Workflow {
		w := workflowFor(job)(server)
		w.Ref = "refs/heads/release"
		return w
	})
	job.Steps = append([]fakegithub.Step{grantIDToken(kw.tokenService(t))}, buildAndAttest()...)
	if _, err := kw.gh.QueueJob(job); err != nil {
		t.Fatal(err)
	}
	a, err := runner.New(kw.cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.Run(context.Background())
	if res, ok := kw.gh.JobResult(602); !ok || res.Result != "failed" {
		t.Fatalf("job %+v: the attest step should fail", res)
	}
	ws := filepath.Join(kw.runnerDir, "_work", "app", "app")
	if _, err := os.Stat(filepath.Join(ws, "dist", "app.tar.gz.sigstore.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a bundle was written: %v", err)
	}
	if kw.ss.Rekor.Size() != 0 {
		t.Error("an entry reached the transparency log")
	}
	if !strings.Contains(kw.agentLog.String(), provenance.ErrCertificateIdentity.Error()) {
		t.Errorf("the agent's log does not say why:\n%s", kw.agentLog.String())
	}
	kw.assertTokenNowhere(t)
}

// TestKeylessWithoutGateSigstore: a token but no Sigstore in the gate's
// policy gives a key-signed bundle and a notice; with keyless: required the
// attest step fails instead.
func TestKeylessWithoutGateSigstore(t *testing.T) {
	for _, tc := range []struct {
		keyless string
		result  string
	}{
		{"auto", "succeeded"},
		{"required", "failed"},
	} {
		t.Run(tc.keyless, func(t *testing.T) {
			job := releaseJob(603)
			kw := newKeylessWorldG(t, workflowFor(job), false)
			job.Steps = []fakegithub.Step{
				grantIDToken(kw.tokenService(t)),
				{Name: "build", Run: "mkdir -p dist && echo 'release 1.0' > dist/app.tar.gz"},
				{Name: "attest", Uses: filepath.Join(repoRoot, "action", "attest"), With: map[string]string{"subject-path": "dist/*.tar.gz", "keyless": tc.keyless}},
			}
			if _, err := kw.gh.QueueJob(job); err != nil {
				t.Fatal(err)
			}
			a, err := runner.New(kw.cfg)
			if err != nil {
				t.Fatal(err)
			}
			a.Run(context.Background())
			if res, ok := kw.gh.JobResult(603); !ok || res.Result != tc.result {
				t.Fatalf("job %+v, want %s", res, tc.result)
			}
			raw, err := os.ReadFile(filepath.Join(kw.runnerDir, "_work", "app", "app", "dist", "app.tar.gz.sigstore.json"))
			if tc.result == "failed" {
				if !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("keyless: required wrote a key-signed bundle (%v)", err)
				}
			} else {
				var b bundle.Bundle
				if err := b.UnmarshalJSON(raw); err != nil {
					t.Fatal(err)
				}
				if vc, _ := b.VerificationContent(); vc == nil || vc.Certificate() != nil {
					t.Fatal("want a key-signed bundle")
				}
			}
			if kw.ss.Fulcio.Requests != 0 {
				t.Error("the token went to a Fulcio the gate did not name")
			}
			kw.assertTokenNowhere(t)
		})
	}
}
