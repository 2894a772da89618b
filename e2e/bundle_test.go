package e2e

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/e2e/harness"
	"github.com/attested-runner/attested-runner/provenance"

	"github.com/attested-runner/attested-runner/attest/attesttest"
)

// built is one genuine release: an artifact, its bundle, the gate's roots,
// copied out of the world that produced them (which is closed). The bundle
// attacks start from it.
type built struct {
	dir                      string
	artifact, bundle, roots  string
	repo, runID, server      string
	rootKeys                 []crypto.PublicKey
	artifactSHA, tamperedSHA []byte
	tampered                 string // a copy of the artifact with one byte changed
}

var (
	builtOnce sync.Once
	builtRel  *built
	builtErr  error
)

// genuineRelease builds the shared release once per test binary.
func genuineRelease(t *testing.T) *built {
	t.Helper()
	attesttest.RequireSWTPM(t)
	builtOnce.Do(func() {
		builtErr = errors.New("the release fixture failed in an earlier test")
		builtRel, builtErr = buildRelease(t)
	})
	if builtErr != nil {
		t.Fatalf("building the genuine release: %v", builtErr)
	}
	return builtRel
}

func buildRelease(t *testing.T) (*built, error) {
	dir, err := os.MkdirTemp("", "e2e-release-")
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() { os.RemoveAll(dir) })
	// The world lives in a throwaway sub-test context: its own directory,
	// closed when the release is copied out.
	e, _ := newEnv(t, envOptions{})
	defer e.Close()
	e.queue(900, harness.BuildAndAttest(e.AttestAction, "release 2.0")...)
	a := e.startAgent(harness.AgentOptions{})
	x, err := a.Wait(e.ctx)
	if err != nil {
		return nil, err
	}
	if x.Code != 0 {
		return nil, fmt.Errorf("release job: agent %+v", x)
	}
	roots, err := e.Gate.Roots(e.ctx)
	if err != nil {
		return nil, err
	}
	art, bundle := artifactOf(e, a)
	b := &built{dir: dir, repo: e.repo(), runID: "900", server: e.GitHub.URL(),
		artifact: filepath.Join(dir, "app.tar.gz"), bundle: filepath.Join(dir, "app.tar.gz.sigstore.json"),
		roots: filepath.Join(dir, "gate-roots.pem"), tampered: filepath.Join(dir, "app-tampered.tar.gz")}
	for from, to := range map[string]string{art: b.artifact, bundle: b.bundle, roots: b.roots} {
		data, err := os.ReadFile(from)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(to, data, 0o644); err != nil {
			return nil, err
		}
	}
	data, _ := os.ReadFile(b.artifact)
	d1 := sha256.Sum256(data)
	b.artifactSHA = d1[:]
	data = append(data, '!')
	d2 := sha256.Sum256(data)
	b.tamperedSHA = d2[:]
	if err := os.WriteFile(b.tampered, data, 0o644); err != nil {
		return nil, err
	}
	if b.rootKeys, err = provenance.LoadTrustedRoots(b.roots); err != nil {
		return nil, err
	}
	// Positive control: the genuine release verifies, with every
	// expectation the attacks below break.
	v, err := bin.VerifyArtifact(e.ctx, harness.VerifyOptions{Artifact: b.artifact, GateKey: b.roots, Hostname: b.server, Repo: b.repo, RunID: b.runID})
	if err != nil {
		return nil, err
	}
	if v.ExitCode != 0 {
		return nil, fmt.Errorf("the genuine release does not verify:\n%s%s", v.Stdout, v.Stderr)
	}
	e.requireAudit(e.audit(), "admit", "accepted", "")
	return b, nil
}

// requireVerifyRejected runs attested-verify (JSON report) and asserts it
// exits 1 with the named check failed for the sentinel's reason, then
// verifies in-process to assert the sentinel with errors.Is.
func requireVerifyRejected(t *testing.T, o harness.VerifyOptions, digest []byte, check string, sentinel error) {
	t.Helper()
	o.JSON = true
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := bin.VerifyArtifact(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if v.ExitCode != 1 || v.Report == nil || v.Report.Verified {
		t.Fatalf("attested-verify exit %d, want 1 (not verified):\n%s%s", v.ExitCode, v.Stdout, v.Stderr)
	}
	a := v.Report.Artifacts[0]
	if got := v.Report.FailedCheck(); got != check || !strings.Contains(a.Error, sentinel.Error()) {
		t.Fatalf("failed check %q (%s), want %q (%v)", got, a.Error, check, sentinel)
	}
	// The same verdict in text form, as a consumer reads it.
	o.JSON = false
	if v, err := bin.VerifyArtifact(ctx, o); err != nil || v.ExitCode != 1 || !strings.Contains(v.Stdout, "NOT VERIFIED: ") {
		t.Fatalf("text report: %v\n%s", err, v.Stdout)
	}
	bundle := o.Bundle
	if bundle == "" {
		bundle = o.Artifact + ".sigstore.json"
	}
	raw, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	roots, _ := provenance.LoadTrustedRoots(o.GateKey)
	_, err = provenance.Verify(raw, digest, provenance.VerifyOptions{ExpectedRepository: o.Repo, ExpectedRunID: o.RunID,
		TrustedGateRoots: roots, AllowSoftwareTPMInsecure: true})
	if !errors.Is(err, sentinel) {
		t.Fatalf("provenance.Verify: %v, want %v", err, sentinel)
	}
}

// TestBundleSubjectSwappedRejected: the genuine bundle presented for
// another artifact (a modified copy): its digest is no subject.
func TestBundleSubjectSwappedRejected(t *testing.T) {
	r := genuineRelease(t)
	requireVerifyRejected(t, harness.VerifyOptions{Artifact: r.tampered, Bundle: r.bundle, GateKey: r.roots, Hostname: r.server, Repo: r.repo},
		r.tamperedSHA, "subject", provenance.ErrSubjectMismatch)
}

// TestBundleStatementEditedRejected: the attacker edits the signed
// statement so that its subject is the modified artifact's digest. The
// subject check passes; the DSSE signature no longer does.
func TestBundleStatementEditedRejected(t *testing.T) {
	r := genuineRelease(t)
	edited := filepath.Join(t.TempDir(), "edited.sigstore.json")
	editStatement(t, r.bundle, edited, func(st map[string]any) {
		subj := st["subject"].([]any)[0].(map[string]any)
		subj["digest"].(map[string]any)["sha256"] = hex.EncodeToString(r.tamperedSHA)
	})
	requireVerifyRejected(t, harness.VerifyOptions{Artifact: r.tampered, Bundle: edited, GateKey: r.roots, Hostname: r.server, Repo: r.repo},
		r.tamperedSHA, "signature", provenance.ErrSignature)
}

// TestBundleFromRepoAVerifiedAsRepoBRejected: a genuine bundle of
// octo-org/app presented as the build of another repository.
func TestBundleFromRepoAVerifiedAsRepoBRejected(t *testing.T) {
	r := genuineRelease(t)
	requireVerifyRejected(t, harness.VerifyOptions{Artifact: r.artifact, GateKey: r.roots, Hostname: r.server, Repo: "octo-org/payments"},
		r.artifactSHA, "repository", provenance.ErrRepositoryMismatch)
}

// TestBundleReplayedForAnotherRunRejected: a genuine bundle of run 900
// presented for run 901 of the same repository.
func TestBundleReplayedForAnotherRunRejected(t *testing.T) {
	r := genuineRelease(t)
	requireVerifyRejected(t, harness.VerifyOptions{Artifact: r.artifact, GateKey: r.roots, Hostname: r.server, Repo: r.repo, RunID: "901"},
		r.artifactSHA, "run", provenance.ErrRunMismatch)
}

// TestBundleSignedByUnadmittedKeyRejected: the attacker signs their own
// provenance (provenance.Sign, a software P-256 key) for the modified
// artifact, and embeds the genuine environment certificate and the genuine
// response-time quote. The certificate certifies the TPM-held key of the
// admitted environment, not the attacker's: the signature check fails.
func TestBundleSignedByUnadmittedKeyRejected(t *testing.T) {
	r := genuineRelease(t)
	st := readStatement(t, r.bundle)
	cert := byproduct(t, st, provenance.EnvCertByproduct)
	ev, err := attest.DecodeEvidence(byproduct(t, st, provenance.ResponseQuoteProduct))
	if err != nil {
		t.Fatal(err)
	}
	build := buildFromStatement(t, st)
	build.Subjects = []provenance.Subject{{Name: "app.tar.gz", SHA256: r.tamperedSHA}}
	build.EnvCert = cert
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := provenance.Sign(context.Background(), build, key, replayedQuote{ev})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "forged.sigstore.json")
	if err := os.WriteFile(path, forged, 0o644); err != nil {
		t.Fatal(err)
	}
	requireVerifyRejected(t, harness.VerifyOptions{Artifact: r.tampered, Bundle: path, GateKey: r.roots, Hostname: r.server, Repo: r.repo},
		r.tamperedSHA, "signature", provenance.ErrSignature)
}

// replayedQuote answers every challenge with captured evidence: the best
// an attacker without the TPM can do.
type replayedQuote struct{ ev *attest.Evidence }

func (q replayedQuote) Collect(attest.Challenge) (*attest.Evidence, error) { return q.ev, nil }

// readStatement returns the in-toto statement of a bundle, unverified.
func readStatement(t *testing.T, bundlePath string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	var b map[string]any
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	payload, err := base64.StdEncoding.DecodeString(b["dsseEnvelope"].(map[string]any)["payload"].(string))
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(payload, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// editStatement rewrites the statement inside a bundle (keeping the
// signature) and writes the result to out.
func editStatement(t *testing.T, bundlePath, out string, edit func(map[string]any)) {
	t.Helper()
	raw, err := os.ReadFile(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	var b map[string]any
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	st := readStatement(t, bundlePath)
	edit(st)
	payload, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	b["dsseEnvelope"].(map[string]any)["payload"] = base64.StdEncoding.EncodeToString(payload)
	edited, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, edited, 0o644); err != nil {
		t.Fatal(err)
	}
}

// byproduct returns the content of a named byproduct of a statement.
func byproduct(t *testing.T, st map[string]any, name string) []byte {
	t.Helper()
	rd := st["predicate"].(map[string]any)["runDetails"].(map[string]any)
	for _, p := range rd["byproducts"].([]any) {
		p := p.(map[string]any)
		if p["name"] == name {
			b, err := base64.StdEncoding.DecodeString(p["content"].(string))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatalf("no byproduct %s", name)
	return nil
}

// buildFromStatement reconstructs the Build a genuine statement records.
func buildFromStatement(t *testing.T, st map[string]any) *provenance.Build {
	t.Helper()
	s := func(m any, k string) string { v, _ := m.(map[string]any)[k].(string); return v }
	pred := st["predicate"].(map[string]any)
	bd, rd := pred["buildDefinition"].(map[string]any), pred["runDetails"].(map[string]any)
	ext, in := bd["externalParameters"].(map[string]any), bd["internalParameters"].(map[string]any)
	gh, ar, wf := in["github"], in["attestedRunner"], ext["workflow"]
	meta := rd["metadata"]
	job := provenance.Job{
		Repository: s(ext, "repository"), Ref: s(ext, "ref"), SHA: s(ext, "sha"), WorkflowRef: s(wf, "ref"),
		EventName: s(ext, "eventName"), Job: s(ext, "job"), RepositoryID: s(gh, "repositoryId"), Actor: s(gh, "actor"),
		RunID: s(gh, "runId"), RunAttempt: s(gh, "runAttempt"), WorkflowSHA: s(gh, "workflowSha"), RunnerName: s(gh, "runnerName"),
	}
	job.ServerURL = strings.TrimSuffix(s(wf, "repository"), "/"+job.Repository)
	started, err1 := time.Parse(time.RFC3339Nano, s(meta, "startedOn"))
	finished, err2 := time.Parse(time.RFC3339Nano, s(meta, "finishedOn"))
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	return &provenance.Build{
		BuilderID: s(rd["builder"], "id"), Job: job, Image: provenance.Image{ID: s(ar, "imageId")},
		StartedOn: started, FinishedOn: finished,
	}
}
