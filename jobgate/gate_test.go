package jobgate_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/internal/fakeclock"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
	"github.com/attested-runner/attested-runner/provenance"
)

// harness is a gate (in-process HTTP) in front of a fake GitHub, with a
// simulated machine whose policy the gate applies.
type harness struct {
	t       testing.TB
	gh      *fakegithub.Server
	gate    *jobgate.Gate
	srv     *httptest.Server
	client  *gateapi.Client
	store   *jobgate.BoltStore
	dbPath  string
	machine *attesttest.Machine
	clock   *fakeclock.Clock
	signer  crypto.Signer
	cfg     *jobgate.Config
	reg     *jobgate.GitHubRegistry
	// wrap, if set, is the store the gate uses in place of store (to
	// inject faults).
	wrap func(*jobgate.BoltStore) jobgate.Store
	// wrapRegistry, if set, is the registry the gate uses in place of reg.
	wrapRegistry func(jobgate.Registry) jobgate.Registry
}

// fakeGitHub starts the fake GitHub and a registry on it.
func fakeGitHub(t testing.TB) (*fakegithub.Server, *jobgate.GitHubRegistry) {
	t.Helper()
	k, pemKey, err := fakegithub.AppKey()
	if err != nil {
		t.Fatal(err)
	}
	gh, err := fakegithub.Start(fakegithub.Options{AppID: 1001, AppPublicKey: &k.PublicKey, InstallationID: 2002, Org: "octo-org"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gh.Close() })
	reg, err := jobgate.NewGitHubRegistry(jobgate.GitHubOptions{
		APIURL: gh.URL() + "/", AppID: 1001, InstallationID: 2002, PrivateKey: pemKey, Org: "octo-org",
		MaxRateLimit: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return gh, reg
}

func fakeRegistry(t testing.TB) jobgate.Registry {
	_, reg := fakeGitHub(t)
	return reg
}

func newHarness(t *testing.T) *harness { return newHarnessF(t) }

func newHarnessF(t testing.TB) *harness {
	t.Helper()
	gh, reg := fakeGitHub(t)
	m := attesttest.SimulatedMachine(t)
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	h := &harness{t: t, gh: gh, machine: m, clock: fakeclock.New(time.Now()), signer: signer, reg: reg,
		dbPath: filepath.Join(t.TempDir(), "gate.db")}
	h.cfg = &jobgate.Config{
		Listen: "127.0.0.1:0", GateID: "https://gate.test", BuilderID: "https://gate.test/builder/v1",
		GitHub: jobgate.GitHubConfig{Org: "octo-org", Labels: []string{"self-hosted", "attested"}},
		Policy: jobgate.PolicyConfig{AllowedLabels: []string{"gpu"}},
	}
	h.start()
	return h
}

// start (re)opens the store and serves a gate on it: calling it again is a
// gate restart.
func (h *harness) start() {
	t := h.t
	if h.srv != nil {
		h.srv.Close()
		h.store.Close()
	}
	store, err := jobgate.OpenBoltStore(h.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	var gs jobgate.Store = store
	if h.wrap != nil {
		gs = h.wrap(store)
	}
	var reg jobgate.Registry = h.reg
	if h.wrapRegistry != nil {
		reg = h.wrapRegistry(reg)
	}
	g, err := jobgate.New(jobgate.Options{Config: h.cfg, Store: gs, Registry: reg, Policy: h.machine.Policy,
		PolicyDigest: "test", Signer: h.signer, Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	h.store, h.gate = store, g
	h.srv = httptest.NewServer(g.Handler())
	t.Cleanup(func() { h.srv.Close(); store.Close() })
	h.client = &gateapi.Client{BaseURL: h.srv.URL}
}

// evidence answers a fresh challenge with the machine's collector.
func (h *harness) evidence(ctx context.Context) ([]byte, []byte) {
	h.t.Helper()
	ch, err := h.client.Challenge(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	ev, err := h.machine.Collector.Collect(attest.AdmissionChallenge(ch.Nonce))
	if err != nil {
		h.t.Fatal(err)
	}
	b, _ := ev.Encode()
	return ch.Nonce, b
}

func (h *harness) admit(ctx context.Context, labels ...string) (*gateapi.AdmitResponse, error) {
	nonce, ev := h.evidence(ctx)
	return h.client.Admit(ctx, &gateapi.AdmitRequest{Nonce: nonce, Evidence: ev, Labels: labels})
}

func (h *harness) auditReasons() []string {
	var out []string
	h.store.AuditLog(context.Background(), func(r jobgate.AuditRecord) error {
		out = append(out, r.Action+":"+r.Result+":"+r.Reason)
		return nil
	})
	return out
}

func rejectedCode(err error) string {
	var rej *gateapi.RejectedError
	if errors.As(err, &rej) {
		return rej.Err.Code
	}
	return ""
}

func TestAdmitHappyPath(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	nonce, ev := h.evidence(ctx)
	resp, err := h.client.Admit(ctx, &gateapi.AdmitRequest{Nonce: nonce, Evidence: ev, Labels: []string{"gpu"}})
	if err != nil {
		t.Fatal(err)
	}
	// The answer is signed by the gate's key for this nonce and evidence.
	if err := gateapi.VerifyDelivery(getRoots(t, h.srv.URL), nonce, ev, resp); err != nil {
		t.Fatalf("delivery signature: %v", err)
	}
	if err := gateapi.VerifyDelivery(getRoots(t, h.srv.URL), nonce, append(ev, ' '), resp); !errors.Is(err, gateapi.ErrDeliveryForged) {
		t.Fatalf("delivery signature for other evidence: %v", err)
	}
	want := []string{"self-hosted", "attested", "gpu"}
	if strings.Join(resp.Labels, ",") != strings.Join(want, ",") {
		t.Errorf("labels %v, want %v", resp.Labels, want)
	}
	gr, ok := h.gh.Runner(resp.RunnerName)
	if !ok || gr.ID != resp.RunnerID || strings.Join(gr.Labels, ",") != strings.Join(want, ",") {
		t.Fatalf("GitHub runner %+v (ok %v)", gr, ok)
	}
	if h.gh.JITMints() != 1 {
		t.Errorf("%d JIT configs minted", h.gh.JITMints())
	}
	// Sealed to the attested HPKE key: it opens there, and only there.
	jit, err := h.machine.Collector.HPKE().Open(gateapi.JITContext(resp.RunnerName), resp.SealedJITConfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := fakegithub.DecodeJITConfig(string(jit))
	if err != nil || cfg.Runner.AgentName != resp.RunnerName {
		t.Fatalf("JIT config: %+v %v", cfg, err)
	}
	other, _ := attest.NewHPKEKey()
	if _, err := other.Open(gateapi.JITContext(resp.RunnerName), resp.SealedJITConfig); !errors.Is(err, attest.ErrSealed) {
		t.Fatalf("opened with another key: %v", err)
	}
	if _, err := h.machine.Collector.HPKE().Open(gateapi.JITContext("attested-other"), resp.SealedJITConfig); !errors.Is(err, attest.ErrSealed) {
		t.Fatalf("opened for another runner name: %v", err)
	}
	// The environment certificate verifies with the gate's published root.
	roots := getRoots(t, h.srv.URL)
	cert, err := provenance.VerifyEnvCert(resp.EnvironmentCertificate, roots)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cert.EnvKey, h.machine.Collector.EnvKey()) || cert.RunnerName != resp.RunnerName || cert.Image.ID != "test-image" {
		t.Errorf("certificate %+v", cert)
	}
	if got := h.auditReasons(); len(got) != 1 || got[0] != "admit:accepted:" {
		t.Errorf("audit %v", got)
	}
}

// The policy's Sigstore instances reach the agent in the signed answer.
func TestAdmitTellsSigstore(t *testing.T) {
	h := newHarness(t)
	want := gateapi.Sigstore{FulcioURL: "https://fulcio.example", RekorURL: "https://rekor.example", OIDCIssuer: "https://issuer.example"}
	h.cfg.Policy.Sigstore = &want
	h.start()
	ctx := context.Background()
	nonce, ev := h.evidence(ctx)
	resp, err := h.client.Admit(ctx, &gateapi.AdmitRequest{Nonce: nonce, Evidence: ev})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Sigstore == nil || *resp.Sigstore != want {
		t.Fatalf("sigstore %+v, want %+v", resp.Sigstore, want)
	}
	if err := gateapi.VerifyDelivery(getRoots(t, h.srv.URL), nonce, ev, resp); err != nil {
		t.Fatalf("delivery signature: %v", err)
	}
	resp.Sigstore.FulcioURL = "https://fulcio.attacker"
	if err := gateapi.VerifyDelivery(getRoots(t, h.srv.URL), nonce, ev, resp); !errors.Is(err, gateapi.ErrDeliveryForged) {
		t.Fatalf("redirected Fulcio: %v", err)
	}
}

func getRoots(t *testing.T, base string) []crypto.PublicKey {
	t.Helper()
	resp, err := http.Get(base + gateapi.PathRoots)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	keys, err := provenance.ParseTrustedRoots(b)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestAdmitRejections(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()

	post := func(body []byte) (int, string) {
		resp, err := http.Post(h.srv.URL+gateapi.PathAdmit, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e gateapi.Error
		json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Code
	}
	t.Run("malformed JSON", func(t *testing.T) {
		if st, code := post([]byte(`{"nonce": `)); st != 400 || code != "malformed_request" {
			t.Fatalf("%d %s", st, code)
		}
	})
	t.Run("unknown field", func(t *testing.T) {
		if st, code := post([]byte(`{"nonce":"","evidence":{},"admin":true}`)); st != 400 || code != "malformed_request" {
			t.Fatalf("%d %s", st, code)
		}
	})
	t.Run("oversized body", func(t *testing.T) {
		big := append([]byte(`{"evidence":"`), bytes.Repeat([]byte("A"), attest.MaxEvidenceSize+128<<10)...)
		if st, code := post(append(big, `"}`...)); st != 413 || code != "too_large" {
			t.Fatalf("%d %s", st, code)
		}
	})
	t.Run("unknown nonce", func(t *testing.T) {
		_, ev := h.evidence(ctx)
		_, err := h.client.Admit(ctx, &gateapi.AdmitRequest{Nonce: bytes.Repeat([]byte{1}, 32), Evidence: ev})
		if rejectedCode(err) != "nonce_unknown" {
			t.Fatalf("%v", err)
		}
	})
	t.Run("expired nonce", func(t *testing.T) {
		nonce, ev := h.evidence(ctx)
		h.clock.Add(2 * time.Minute)
		defer h.clock.Add(-2 * time.Minute)
		_, err := h.client.Admit(ctx, &gateapi.AdmitRequest{Nonce: nonce, Evidence: ev})
		if rejectedCode(err) != "nonce_expired" {
			t.Fatalf("%v", err)
		}
	})
	t.Run("label not allowed", func(t *testing.T) {
		_, err := h.admit(ctx, "production-deploy")
		if rejectedCode(err) != "label_not_allowed" {
			t.Fatalf("%v", err)
		}
	})
	t.Run("evidence failing verification", func(t *testing.T) {
		nonce, _ := h.evidence(ctx)
		// Evidence made for another nonce: a replay.
		_, stale := h.evidence(ctx)
		_, err := h.client.Admit(ctx, &gateapi.AdmitRequest{Nonce: nonce, Evidence: stale})
		if rejectedCode(err) != "nonce_mismatch" {
			t.Fatalf("%v", err)
		}
	})
	t.Run("malformed evidence", func(t *testing.T) {
		nonce, _ := h.evidence(ctx)
		_, err := h.client.Admit(ctx, &gateapi.AdmitRequest{Nonce: nonce, Evidence: []byte(`{"format":"x"}`)})
		if rejectedCode(err) != "evidence_malformed" {
			t.Fatalf("%v", err)
		}
	})
	if h.gh.JITMints() != 0 {
		t.Fatalf("%d runners minted by rejected admissions", h.gh.JITMints())
	}
	t.Run("nonce reused", func(t *testing.T) {
		nonce, ev := h.evidence(ctx)
		if _, err := h.client.Admit(ctx, &gateapi.AdmitRequest{Nonce: nonce, Evidence: ev}); err != nil {
			t.Fatal(err)
		}
		_, err := h.client.Admit(ctx, &gateapi.AdmitRequest{Nonce: nonce, Evidence: ev})
		if rejectedCode(err) != "nonce_used" {
			t.Fatalf("%v", err)
		}
	})
	t.Run("same environment key twice", func(t *testing.T) {
		_, err := h.admit(ctx)
		if rejectedCode(err) != "key_already_admitted" {
			t.Fatalf("%v", err)
		}
	})
	if h.gh.JITMints() != 1 {
		t.Fatalf("%d runners minted, want 1", h.gh.JITMints())
	}
	// Every decision is in the audit log, with its reason.
	got := strings.Join(h.auditReasons(), " ")
	for _, want := range []string{"admit:rejected:malformed_request", "admit:rejected:too_large", "admit:rejected:nonce_unknown",
		"admit:rejected:nonce_expired", "admit:rejected:label_not_allowed", "admit:rejected:nonce_mismatch",
		"admit:rejected:evidence_malformed", "admit:accepted:", "admit:rejected:nonce_used", "admit:rejected:key_already_admitted"} {
		if !strings.Contains(got, want) {
			t.Errorf("audit lacks %s: %s", want, got)
		}
	}
	if n, _, err := jobgate.VerifyAudit(ctx, h.store); err != nil || n < 10 {
		t.Errorf("audit chain: %d records, %v", n, err)
	}
}

func TestSoftwareTPMRefusedByStrictGate(t *testing.T) {
	h := newHarness(t)
	strict := *h.machine.Policy
	strict.AllowSoftwareTPMUnsafe = false
	h.machine.Policy = &strict
	h.start()
	if _, err := h.admit(context.Background()); rejectedCode(err) != "software_tpm" {
		t.Fatalf("%v", err)
	}
}

func TestGitHubFaults(t *testing.T) {
	ctx := context.Background()
	t.Run("5xx then success: one runner", func(t *testing.T) {
		h := newHarness(t)
		h.gh.FailNext("POST", "/orgs/octo-org/actions/runners/generate-jitconfig", 2, 502, 0)
		if _, err := h.admit(ctx); err != nil {
			t.Fatal(err)
		}
		if n := h.gh.JITMints(); n != 1 || len(h.gh.Runners()) != 1 {
			t.Fatalf("%d mints, %d runners", n, len(h.gh.Runners()))
		}
	})
	t.Run("response lost after GitHub minted: still one runner", func(t *testing.T) {
		h := newHarness(t)
		h.gh.FailNextAfterApply("POST", "/orgs/octo-org/actions/runners/generate-jitconfig", 1, 502)
		resp, err := h.admit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rs := h.gh.Runners()
		if len(rs) != 1 || rs[0].ID != resp.RunnerID {
			t.Fatalf("runners after a lost response: %+v", rs)
		}
	})
	t.Run("429 with Retry-After honoured", func(t *testing.T) {
		h := newHarness(t)
		h.gh.FailNext("POST", "/orgs/octo-org/actions/runners/generate-jitconfig", 1, 429, time.Second)
		if _, err := h.admit(ctx); err != nil {
			t.Fatal(err)
		}
		var times []time.Time
		for _, c := range h.gh.Calls() {
			if strings.HasSuffix(c.Path, "generate-jitconfig") {
				times = append(times, c.Time)
			}
		}
		if len(times) != 2 || times[1].Sub(times[0]) < time.Second {
			t.Fatalf("mint attempts at %v: the retry did not wait for Retry-After", times)
		}
	})
	t.Run("GitHub down: clean failure, then admitted with the same key", func(t *testing.T) {
		h := newHarness(t)
		h.gh.Down(true)
		_, err := h.admit(ctx)
		if err == nil || !strings.Contains(err.Error(), "github_unavailable") {
			t.Fatalf("%v", err)
		}
		h.gh.Down(false)
		if _, err := h.admit(ctx); err != nil {
			t.Fatalf("after GitHub came back: %v", err)
		}
		if len(h.gh.Runners()) != 1 {
			t.Fatalf("%d runners", len(h.gh.Runners()))
		}
		if got := strings.Join(h.auditReasons(), " "); !strings.Contains(got, "admit:failed:github_unavailable") {
			t.Errorf("audit %s", got)
		}
	})
}

func TestRestartBetweenChallengeAndAdmit(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	nonce, ev := h.evidence(ctx)
	h.start() // gate restart
	if _, err := h.client.Admit(ctx, &gateapi.AdmitRequest{Nonce: nonce, Evidence: ev}); err != nil {
		t.Fatalf("nonce forgotten across a restart: %v", err)
	}
	h.start()
	if _, err := h.client.Admit(ctx, &gateapi.AdmitRequest{Nonce: nonce, Evidence: ev}); rejectedCode(err) != "nonce_used" {
		t.Fatalf("used nonce accepted after a restart: %v", err)
	}
	if _, err := h.admit(ctx); rejectedCode(err) != "key_already_admitted" {
		t.Fatalf("admitted key forgotten across a restart: %v", err)
	}
}

func TestConcurrentAdmitsOfOneKey(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	const n = 8
	reqs := make([]*gateapi.AdmitRequest, n)
	for i := range reqs {
		nonce, ev := h.evidence(ctx)
		reqs[i] = &gateapi.AdmitRequest{Nonce: nonce, Evidence: ev}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = h.client.Admit(ctx, reqs[i]) }()
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case rejectedCode(err) != "key_already_admitted":
			t.Errorf("unexpected: %v", err)
		}
	}
	if wins != 1 || h.gh.JITMints() != 1 {
		t.Fatalf("%d admissions won, %d runners minted; want exactly 1", wins, h.gh.JITMints())
	}
}

func TestDeregister(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	resp, err := h.admit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(s crypto.Signer, at time.Time) *gateapi.DeregisterRequest {
		d := sha256.Sum256(gateapi.DeregisterMessage(resp.RunnerName, "done", "job completed", at))
		sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		return &gateapi.DeregisterRequest{RunnerName: resp.RunnerName, Outcome: "done", Reason: "job completed", SignedAt: at, Signature: sig}
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := h.client.Deregister(ctx, sign(other, h.clock.Now())); rejectedCode(err) != "bad_signature" {
		t.Fatalf("signature by another key: %v", err)
	}
	if _, err := h.client.Deregister(ctx, sign(h.machine.Collector.Signer(), h.clock.Now().Add(-time.Hour))); rejectedCode(err) != "stale_request" {
		t.Fatalf("stale: %v", err)
	}
	if _, ok := h.gh.Runner(resp.RunnerName); !ok {
		t.Fatal("runner removed by a refused deregistration")
	}
	req := sign(h.machine.Collector.Signer(), h.clock.Now())
	out, err := h.client.Deregister(ctx, req)
	if err != nil || !out.Removed {
		t.Fatalf("%+v %v", out, err)
	}
	if _, ok := h.gh.Runner(resp.RunnerName); ok {
		t.Fatal("runner still on GitHub")
	}
	// Idempotent.
	if out, err := h.client.Deregister(ctx, req); err != nil || out.Removed {
		t.Fatalf("second deregistration: %+v %v", out, err)
	}
}

func TestReconcileRemovesVanishedRunner(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	resp, err := h.admit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Its VM never connects (crashed after admission). Within the grace
	// period, reconcile leaves it alone.
	if rep, err := h.gate.Reconcile(ctx); err != nil || rep.Removed != 0 {
		t.Fatalf("early reconcile: %+v %v", rep, err)
	}
	h.clock.Add(3 * time.Minute)
	rep, err := h.gate.Reconcile(ctx)
	if err != nil || rep.Removed != 1 {
		t.Fatalf("reconcile: %+v %v", rep, err)
	}
	if _, ok := h.gh.Runner(resp.RunnerName); ok {
		t.Fatal("zombie runner left on GitHub")
	}
	rec, err := h.store.Runner(ctx, resp.RunnerName)
	if err != nil || rec.State != jobgate.StateRemoved {
		t.Fatalf("record %+v %v", rec, err)
	}
	// A runner nobody admitted (e.g. minted before a gate crash) goes too.
	if _, _, err := h.reg.Mint(ctx, "attested-orphan", []string{"self-hosted"}, ""); err != nil {
		t.Fatal(err)
	}
	if rep, err := h.gate.Reconcile(ctx); err != nil || rep.Removed != 1 {
		t.Fatalf("orphan: %+v %v", rep, err)
	}
	if got := strings.Join(h.auditReasons(), " "); !strings.Contains(got, "reconcile:removed:") {
		t.Errorf("audit %s", got)
	}
}

// cancelOnRemove is a registry whose Remove succeeds on GitHub and then
// cancels the reconcile's context, as a shutdown signal arriving during
// the removal does.
type cancelOnRemove struct {
	jobgate.Registry
	cancel context.CancelFunc
}

func (c cancelOnRemove) Remove(ctx context.Context, id int64) error {
	err := c.Registry.Remove(ctx, id)
	c.cancel()
	return err
}

// listAnyway lists runners whatever the context and counts removals.
type listAnyway struct {
	jobgate.Registry
	removes *int
}

func (l listAnyway) List(context.Context) ([]jobgate.GitHubRunner, error) {
	return l.Registry.List(context.Background())
}

func (l listAnyway) Remove(ctx context.Context, id int64) error {
	*l.removes++
	return l.Registry.Remove(ctx, id)
}

// TestReconcileStartsNoRemovalAfterShutdown: once the reconcile's context
// has ended, a runner due for removal is left for the next gate: no new
// action on GitHub is started during a shutdown.
func TestReconcileStartsNoRemovalAfterShutdown(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if _, _, err := h.reg.Mint(ctx, "attested-orphan", []string{"self-hosted"}, ""); err != nil {
		t.Fatal(err)
	}
	removes := 0
	h.wrapRegistry = func(r jobgate.Registry) jobgate.Registry { return listAnyway{Registry: r, removes: &removes} }
	h.start()
	done, cancel := context.WithCancel(ctx)
	cancel()
	if rep, _ := h.gate.Reconcile(done); rep.Removed != 0 || removes != 0 || len(h.gh.Runners()) != 1 {
		t.Fatalf("after shutdown: %+v, %d removals tried, %d runners left", rep, removes, len(h.gh.Runners()))
	}
	if rep, err := h.gate.Reconcile(ctx); err != nil || rep.Removed != 1 {
		t.Fatalf("next reconcile: %+v %v", rep, err)
	}
}

// failingRegistry fails List or Remove with its errors.
type failingRegistry struct {
	jobgate.Registry
	list, remove error
}

func (f *failingRegistry) List(ctx context.Context) ([]jobgate.GitHubRunner, error) {
	if f.list != nil {
		return nil, f.list
	}
	return f.Registry.List(ctx)
}

func (f *failingRegistry) Remove(ctx context.Context, id int64) error {
	if f.remove != nil {
		return f.remove
	}
	return f.Registry.Remove(ctx, id)
}

// TestReconcileFailures: a reconcile that cannot list GitHub's runners,
// read its own records, or remove a runner says so, and changes no record:
// an empty answer is never read as "every runner is gone".
func TestReconcileFailures(t *testing.T) {
	errGitHub := errors.New("GitHub: 502")
	for _, tc := range []struct {
		name         string
		list, remove error
		store        error
		want         string
	}{
		{name: "listing fails", list: errGitHub, want: "502"},
		{name: "the store's records cannot be read", store: errStoreDown, want: "connection lost"},
		{name: "a removal fails", remove: errGitHub, want: "attested-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, fs := faultyHarness(t)
			ctx := context.Background()
			resp, err := h.admit(ctx)
			if err != nil {
				t.Fatal(err)
			}
			fr := &failingRegistry{}
			h.wrapRegistry = func(r jobgate.Registry) jobgate.Registry { fr.Registry = r; return fr }
			h.start()
			if _, err := h.gate.Reconcile(ctx); err != nil { // sees it offline
				t.Fatalf("first reconcile: %v", err)
			}
			h.clock.Add(3 * time.Minute) // now due for removal
			fr.list, fr.remove = tc.list, tc.remove
			fs.set(func(f *faultyStore) { f.runners = tc.store })
			_, err = h.gate.Reconcile(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
			fs.set(func(f *faultyStore) { f.clear() })
			if rec, err := h.store.Runner(ctx, resp.RunnerName); err != nil || rec.State != jobgate.StateLive {
				t.Fatalf("record after a failed reconcile: %+v %v", rec, err)
			}
		})
	}
}

// ctxStore is bbolt with PostgreSQL's manners: a write under a context
// that has ended fails (pgx honours it; bbolt ignores it).
type ctxStore struct{ *jobgate.BoltStore }

func (s ctxStore) SetState(ctx context.Context, name string, st jobgate.RunnerState, at time.Time, audit *jobgate.AuditRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.BoltStore.SetState(ctx, name, st, at, audit)
}

func (s ctxStore) Release(ctx context.Context, keyDigest string, audit *jobgate.AuditRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.BoltStore.Release(ctx, keyDigest, audit)
}

func (s ctxStore) Audit(ctx context.Context, rec *jobgate.AuditRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.BoltStore.Audit(ctx, rec)
}

// TestReconcileRecordsRemovalDespiteShutdown: a removal already done on
// GitHub when shutdown cancels the reconcile is still recorded, the
// runner's record and its audit entry, on a store that refuses writes
// under an ended context (as PostgreSQL does).
func TestReconcileRecordsRemovalDespiteShutdown(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	resp, err := h.admit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h.wrapRegistry = func(r jobgate.Registry) jobgate.Registry { return cancelOnRemove{Registry: r, cancel: cancel} }
	h.wrap = func(b *jobgate.BoltStore) jobgate.Store { return ctxStore{b} }
	h.start()
	// Its VM never connects: the first reconcile sees it offline, the one
	// after the grace removes it.
	if rep, err := h.gate.Reconcile(rctx); err != nil || rep.Removed != 0 {
		t.Fatalf("early reconcile: %+v %v", rep, err)
	}
	h.clock.Add(3 * time.Minute)
	rep, err := h.gate.Reconcile(rctx)
	if err != nil || rep.Removed != 1 {
		t.Fatalf("reconcile: %+v %v", rep, err)
	}
	if _, onGitHub := h.gh.Runner(resp.RunnerName); onGitHub {
		t.Fatal("the runner is still on GitHub")
	}
	if rec, err := h.store.Runner(ctx, resp.RunnerName); err != nil || rec.State != jobgate.StateRemoved {
		t.Fatalf("removed from GitHub, but its record says %+v %v", rec, err)
	}
	if got := strings.Join(h.auditReasons(), " "); !strings.Contains(got, "reconcile:removed:") {
		t.Fatalf("removal not audited: %s", got)
	}
}

func TestMetricsAndHealth(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.admit(ctx)
	h.admit(ctx) // key already admitted
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ready",
		"/metrics": `jobgate_admissions_total{result="rejected",reason="key_already_admitted"} 1`,
		// (the same path twice would be one map key)
		"/metrics?live": "\njobgate_live_runners 1\n",
	} {
		resp, err := http.Get(h.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("%s: %d %s", path, resp.StatusCode, b)
		}
	}
}

func TestCheckGitHub(t *testing.T) {
	h := newHarness(t)
	for _, r := range h.reg.Check(context.Background()) {
		if !r.OK {
			t.Errorf("check %s failed: %s", r.Name, r.Detail)
		}
	}
	none := "none"
	h.gh.SetPermissions(githubPermissions(none))
	failed := ""
	for _, r := range h.reg.Check(context.Background()) {
		if !r.OK {
			failed += r.Name + ": " + r.Detail + "; "
		}
	}
	if !strings.Contains(failed, "Self-hosted runners") {
		t.Fatalf("missing permission not reported: %q", failed)
	}
}

// TestSoftwareTPMLabelDroppedStillLevel0: evidence from a software TPM
// whose label was dropped (the label is not covered by the quote) is still
// certified as a software TPM at level 0 by a gate that admits software
// TPMs: the gate does not take the agent's word for its level.
func TestSoftwareTPMLabelDroppedStillLevel0(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	nonce, raw := h.evidence(ctx)
	ev, err := attest.DecodeEvidence(raw)
	if err != nil {
		t.Fatal(err)
	}
	ev.SoftwareTPMUnsafe = false
	unlabelled, _ := ev.Encode()
	resp, err := h.client.Admit(ctx, &gateapi.AdmitRequest{Nonce: nonce, Evidence: unlabelled})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := provenance.VerifyEnvCert(resp.EnvironmentCertificate, []crypto.PublicKey{h.signer.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if !cert.SoftwareTPM || cert.Level != 0 {
		t.Fatalf("certificate says software TPM %v, level %d: want true, 0", cert.SoftwareTPM, cert.Level)
	}
}
