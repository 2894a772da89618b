//go:build cgo

// Package provenancetest sets up an admitted environment for tests: a
// simulated machine, a gate key, an environment certificate and a job, so
// provenance can be signed and verified end to end in one process.
package provenancetest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/provenance"
)

// BuilderID is the builder id the test gate certifies.
const BuilderID = "https://gate.example.test/attested-runner/builder/v1"

// Env is an environment admitted by a test gate and running one job.
type Env struct {
	// Machine is the simulated TPM machine (nil for NewTDXEnv's).
	Machine *attesttest.Machine
	// Collector is the agent's collector (Machine.Collector, or the TD's),
	// Policy the reference values and trust that admit it.
	Collector attest.Collector
	Policy    *attest.Policy
	GateKey   *ecdsa.PrivateKey
	Cert      *provenance.EnvCertificate
	EnvCert   []byte
	Admission *attest.Evidence
	Job       provenance.Job
}

// DefaultJob is the job test environments receive.
func DefaultJob(runner string) provenance.Job {
	return provenance.Job{
		ServerURL: "https://github.com", Repository: "octo-org/app", RepositoryID: "4242",
		Ref: "refs/heads/main", SHA: "0123456789abcdef0123456789abcdef01234567",
		WorkflowRef: "octo-org/app/.github/workflows/release.yml@refs/heads/main",
		WorkflowSHA: "0123456789abcdef0123456789abcdef01234567",
		EventName:   "push", Actor: "octocat", RunID: "9001", RunAttempt: "1", Job: "build",
		RunnerName: runner,
	}
}

// NewEnv boots a simulated machine, admits it the way the gate does
// (attest.Verify on an admission challenge, then an environment
// certificate), and dispatches DefaultJob to it (job-start extended).
func NewEnv(t testing.TB) *Env {
	t.Helper()
	return NewEnvWithJob(t, nil)
}

// NewEnvWithJob is NewEnv with DefaultJob changed by edit before it is
// dispatched (so the job-start event names the edited job).
func NewEnvWithJob(t testing.TB, edit func(*provenance.Job)) *Env {
	t.Helper()
	m := attesttest.SimulatedMachine(t)
	e := admit(t, m.Collector, m.Policy, edit)
	e.Machine = m
	return e
}

// NewTDXEnv is NewEnv on a simulated TD without a TPM
// (attesttest.NewTDXMachine: the real COS 113 boot, quotes under a test
// root, UpToDate collateral): the response-time evidence is a TDX quote,
// certified by no AK. Env.Machine is nil.
func NewTDXEnv(t testing.TB) *Env {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	m := attesttest.NewTDXMachine(t, filepath.Join(filepath.Dir(self), "..", "..", "attest", "testdata", "tdx"))
	return admit(t, m.Collector, m.Policy, nil)
}

// admit admits collector the way the gate does (attest.Verify on an
// admission challenge under policy, then an environment certificate) and
// dispatches DefaultJob, edited by edit, to it (job-start extended).
func admit(t testing.TB, collector attest.Collector, policy *attest.Policy, edit func(*provenance.Job)) *Env {
	t.Helper()
	gateKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 32)
	rand.Read(nonce)
	ch := attest.AdmissionChallenge(nonce)
	ev, err := collector.Collect(ch)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := attest.Verify(ev, ch, policy)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := ev.Encode()
	runner := "ar-" + claims.EnvKeyDigest[:12]
	cert := provenance.CertificateFor(claims)
	cert.GateID = "https://gate.example.test"
	cert.RunnerName = runner
	cert.Labels = []string{"self-hosted", "attested"}
	cert.BuilderID = BuilderID
	cert.EvidenceDigest = attest.Digest(enc)
	cert.PolicyDigest = "00"
	cert.IssuedAt = time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	cert.NotAfter = cert.IssuedAt.Add(6 * time.Hour)
	certBundle, err := provenance.IssueEnvCert(context.Background(), gateKey, cert)
	if err != nil {
		t.Fatal(err)
	}
	job := DefaultJob(runner)
	if edit != nil {
		edit(&job)
	}
	if err := collector.Extend(attest.JobStartEvent(job.BuildID())); err != nil {
		t.Fatal(err)
	}
	return &Env{Collector: collector, Policy: policy, GateKey: gateKey, Cert: cert, EnvCert: certBundle, Admission: ev, Job: job}
}

// Build returns a Build for the env's job with the given artifacts.
func (e *Env) Build(artifacts map[string][]byte) *provenance.Build {
	b := &provenance.Build{
		BuilderID: BuilderID, AgentVersion: "test", Job: e.Job,
		Actions: []provenance.ActionRef{{Repository: "actions/checkout", Ref: "v4", SHA: "11bd71901bbe5b1630ceea73d27597364c9af683"}},
		Image:   provenance.Image{ID: e.Cert.Image.ID},
		Labels:  e.Cert.Labels, Level: e.Cert.Level, EnvCert: e.EnvCert,
		StartedOn: time.Now().Add(-30 * time.Second).UTC(), FinishedOn: time.Now().UTC(),
	}
	for name, content := range artifacts {
		d := sha256.Sum256(content)
		b.Subjects = append(b.Subjects, provenance.Subject{Name: name, SHA256: d[:]})
	}
	return b
}

// Sign signs a build with the environment key and a response-time quote.
func (e *Env) Sign(t testing.TB, b *provenance.Build) []byte {
	t.Helper()
	out, err := provenance.Sign(context.Background(), b, e.Collector.Signer(), e.Collector)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Options are verify options that trust this env's gate and expect its job.
func (e *Env) Options() provenance.VerifyOptions {
	return provenance.VerifyOptions{
		ExpectedRepository:       e.Job.Repository,
		TrustedGateRoots:         []crypto.PublicKey{e.GateKey.Public()},
		AllowSoftwareTPMInsecure: true,
	}
}

// unlabelled is a Quoter whose evidence lost its software-TPM label.
type unlabelled struct{ q provenance.Quoter }

func (u unlabelled) Collect(ch attest.Challenge) (*attest.Evidence, error) {
	ev, err := u.q.Collect(ch)
	if ev != nil {
		ev.SoftwareTPMUnsafe = false
	}
	return ev, err
}

// SignUnlabelled is Sign with the software-TPM label dropped from the
// response-time evidence. The label is not covered by the quote: whoever
// holds a software TPM's state can drop it and sign with the environment
// key. Tests use it to show that the label never raises a level.
func (e *Env) SignUnlabelled(t testing.TB, b *provenance.Build) []byte {
	t.Helper()
	out, err := provenance.Sign(context.Background(), b, e.Machine.Collector.Signer(), unlabelled{e.Machine.Collector})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Reissue signs a copy of the env's certificate, changed by edit, with the
// env's gate key: a certificate the trusted gate really issued.
func (e *Env) Reissue(t testing.TB, edit func(*provenance.EnvCertificate)) []byte {
	t.Helper()
	c := *e.Cert
	edit(&c)
	out, err := provenance.IssueEnvCert(context.Background(), e.GateKey, &c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
