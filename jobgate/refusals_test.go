package jobgate_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
)

// post sends a raw body to one of the gate's endpoints and returns the
// status and the reason code of the answer.
func (h *harness) post(path string, body []byte) (int, string) {
	h.t.Helper()
	resp, err := http.Post(h.srv.URL+path, "application/json", bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var e gateapi.Error
	json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Code
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAdmitRequestLimits: the admission request's bounds, each broken
// alone, refused with its status and reason; at the bounds, admitted.
func TestAdmitRequestLimits(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	fresh := func(edit func(*gateapi.AdmitRequest)) []byte {
		nonce, ev := h.evidence(ctx)
		req := gateapi.AdmitRequest{Nonce: nonce, Evidence: ev}
		edit(&req)
		return mustJSON(t, req)
	}
	repeat := func(s string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = s
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		body   []byte
		status int
		code   string
	}{
		{"trailing data", append(fresh(func(*gateapi.AdmitRequest) {}), []byte(` {"nonce":null}`)...), 400, "malformed_request"},
		{"vmId over 128 bytes", fresh(func(r *gateapi.AdmitRequest) { r.VMID = strings.Repeat("a", 129) }), 400, "malformed_request"},
		{"vmId with a control character", fresh(func(r *gateapi.AdmitRequest) { r.VMID = "linux-0001\n" }), 400, "malformed_request"},
		{"nonce of another length", fresh(func(r *gateapi.AdmitRequest) { r.Nonce = r.Nonce[1:] }), 403, "nonce_unknown"},
		{"17 labels", fresh(func(r *gateapi.AdmitRequest) { r.Labels = repeat("gpu", 17) }), 403, "label_not_allowed"},
		{"evidence over its limit", fresh(func(r *gateapi.AdmitRequest) {
			r.Evidence = json.RawMessage(`"` + strings.Repeat("A", attest.MaxEvidenceSize) + `"`)
		}), 413, "evidence_too_large"},
		{"evidence malformed", fresh(func(r *gateapi.AdmitRequest) { r.Evidence = json.RawMessage(`{"format":"x"}`) }), 400, "evidence_malformed"},
		{"evidence for another nonce", fresh(func(r *gateapi.AdmitRequest) { _, r.Evidence = h.evidence(ctx) }), 403, "nonce_mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, code := h.post(gateapi.PathAdmit, tc.body); status != tc.status || code != tc.code {
				t.Fatalf("%d %s, want %d %s", status, code, tc.status, tc.code)
			}
		})
	}
	if n := h.gh.JITMints(); n != 0 {
		t.Fatalf("%d runners minted by refused admissions", n)
	}
	// At the bounds.
	nonce, ev := h.evidence(ctx)
	resp, err := h.client.Admit(ctx, &gateapi.AdmitRequest{Nonce: nonce, Evidence: ev, VMID: strings.Repeat("a", 128), Labels: repeat("gpu", 16)})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(resp.Labels, ","); got != "self-hosted,attested,gpu" {
		t.Errorf("labels %s", got)
	}
}

// faultyStore is the gate's store with chosen operations failing (a full
// disk, a lost database), or with the nonce pre-check passing everything
// (a nonce spent or expired between the check and the reservation).
type faultyStore struct {
	*jobgate.BoltStore
	mu                                  sync.Mutex
	skipNonceCheck                      bool
	reserve, activate, setState, runner error
	checkNonce, newNonce, runners       error
	// editAudit, if set, changes the audit records the store returns
	// (records tampered with in the database).
	editAudit func(*jobgate.AuditRecord)
}

func (f *faultyStore) fault(err *error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return *err
}

func (f *faultyStore) set(fn func(*faultyStore)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// clear removes every fault (called under set's lock).
func (f *faultyStore) clear() {
	f.skipNonceCheck, f.reserve, f.activate, f.setState, f.runner = false, nil, nil, nil, nil
	f.checkNonce, f.newNonce, f.runners, f.editAudit = nil, nil, nil, nil
}

func (f *faultyStore) NewNonce(ctx context.Context, expires time.Time) ([]byte, error) {
	if err := f.fault(&f.newNonce); err != nil {
		return nil, err
	}
	return f.BoltStore.NewNonce(ctx, expires)
}

func (f *faultyStore) Runners(ctx context.Context) ([]jobgate.Runner, error) {
	if err := f.fault(&f.runners); err != nil {
		return nil, err
	}
	return f.BoltStore.Runners(ctx)
}

func (f *faultyStore) AuditLog(ctx context.Context, fn func(jobgate.AuditRecord) error) error {
	f.mu.Lock()
	edit := f.editAudit
	f.mu.Unlock()
	return f.BoltStore.AuditLog(ctx, func(r jobgate.AuditRecord) error {
		if edit != nil {
			edit(&r)
		}
		return fn(r)
	})
}

func (f *faultyStore) CheckNonce(ctx context.Context, nonce []byte, now time.Time) error {
	f.mu.Lock()
	skip := f.skipNonceCheck
	f.mu.Unlock()
	if skip {
		return nil
	}
	if err := f.fault(&f.checkNonce); err != nil {
		return err
	}
	return f.BoltStore.CheckNonce(ctx, nonce, now)
}

func (f *faultyStore) Reserve(ctx context.Context, nonce []byte, now time.Time, r *jobgate.Runner, a *jobgate.AuditRecord) error {
	if err := f.fault(&f.reserve); err != nil {
		return err
	}
	return f.BoltStore.Reserve(ctx, nonce, now, r, a)
}

func (f *faultyStore) Activate(ctx context.Context, r *jobgate.Runner, a *jobgate.AuditRecord) error {
	if err := f.fault(&f.activate); err != nil {
		return err
	}
	return f.BoltStore.Activate(ctx, r, a)
}

func (f *faultyStore) SetState(ctx context.Context, name string, s jobgate.RunnerState, now time.Time, a *jobgate.AuditRecord) error {
	if err := f.fault(&f.setState); err != nil {
		return err
	}
	return f.BoltStore.SetState(ctx, name, s, now, a)
}

func (f *faultyStore) Runner(ctx context.Context, name string) (*jobgate.Runner, error) {
	if err := f.fault(&f.runner); err != nil {
		return nil, err
	}
	return f.BoltStore.Runner(ctx, name)
}

func faultyHarness(t *testing.T) (*harness, *faultyStore) {
	h := newHarness(t)
	fs := &faultyStore{}
	h.wrap = func(s *jobgate.BoltStore) jobgate.Store { fs.BoltStore = s; return fs }
	h.start()
	return h, fs
}

var errStoreDown = errors.New("store: database connection lost")

// TestAdmitStoreFaults: the reservation is the decision; the store's
// refusals there keep their reasons, its failures refuse the admission,
// and a failure after GitHub minted the runner leaves no runner behind and
// the key admissible again.
func TestAdmitStoreFaults(t *testing.T) {
	h, fs := faultyHarness(t)
	ctx := context.Background()
	admit := func(nonce, ev []byte) (int, string) {
		return h.post(gateapi.PathAdmit, mustJSON(t, gateapi.AdmitRequest{Nonce: nonce, Evidence: ev}))
	}

	fs.set(func(f *faultyStore) { f.skipNonceCheck = true })
	nonce, ev := h.evidence(ctx)
	h.clock.Add(2 * time.Minute)
	if status, code := admit(nonce, ev); status != 403 || code != "nonce_expired" {
		t.Errorf("nonce expired by the reservation: %d %s", status, code)
	}
	h.clock.Add(-2 * time.Minute)
	fs.set(func(f *faultyStore) { f.skipNonceCheck = false })

	fs.set(func(f *faultyStore) { f.checkNonce = errStoreDown })
	if status, code := admit(h.evidence(ctx)); status != 503 || code != "store_unavailable" {
		t.Errorf("store down at the nonce check: %d %s", status, code)
	}
	fs.set(func(f *faultyStore) { f.checkNonce = nil })

	fs.set(func(f *faultyStore) { f.reserve = errStoreDown })
	if status, code := admit(h.evidence(ctx)); status != 503 || code != "store_unavailable" {
		t.Errorf("store down at the reservation: %d %s", status, code)
	}
	fs.set(func(f *faultyStore) { f.reserve = nil })
	if n := h.gh.JITMints(); n != 0 {
		t.Fatalf("%d runners minted without a reservation", n)
	}

	fs.set(func(f *faultyStore) { f.activate = errStoreDown })
	if status, code := admit(h.evidence(ctx)); status != 500 || code != "internal" {
		t.Errorf("store down at activation: %d %s", status, code)
	}
	if n, rs := h.gh.JITMints(), h.gh.Runners(); n != 1 || len(rs) != 0 {
		t.Fatalf("after a failed activation: %d minted, %d left at GitHub; want the one minted removed", n, len(rs))
	}
	if got := strings.Join(h.auditReasons(), " "); !strings.Contains(got, "admit:failed:internal") {
		t.Errorf("audit %s", got)
	}
	fs.set(func(f *faultyStore) { f.activate = nil })
	if _, err := h.admit(ctx); err != nil {
		t.Fatalf("the same key after a failed activation: %v", err)
	}
}

// TestDeregisterRejections: a deregistration with one thing wrong is
// refused with its reason and leaves the runner registered.
func TestDeregisterRejections(t *testing.T) {
	h, fs := faultyHarness(t)
	ctx := context.Background()
	resp, err := h.admit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(key crypto.Signer, name, outcome string, at time.Time) []byte {
		d := sha256.Sum256(gateapi.DeregisterMessage(name, outcome, "job completed", at))
		sig, err := key.Sign(rand.Reader, d[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		return mustJSON(t, gateapi.DeregisterRequest{RunnerName: name, Outcome: outcome, Reason: "job completed", SignedAt: at, Signature: sig})
	}
	env := h.machine.Collector.Signer()
	now := h.clock.Now()

	// A runner whose admission has not completed (reserved, not minted).
	pending, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	spki, _ := x509.MarshalPKIXPublicKey(pending.Public())
	ch, err := h.client.Challenge(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.store.Reserve(ctx, ch.Nonce, now, &jobgate.Runner{Name: "attested-pending", KeyDigest: attest.KeyDigest(spki), EnvKey: spki}, nil); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		fault  func(*faultyStore)
		down   bool
		body   []byte
		status int
		code   string
	}{
		{name: "unknown runner", body: sign(env, "attested-nobody", "done", now), status: 404, code: "unknown_runner"},
		{name: "unknown outcome", body: sign(env, resp.RunnerName, "exploded", now), status: 400, code: "malformed_request"},
		{name: "signed an hour ahead", body: sign(env, resp.RunnerName, "done", now.Add(time.Hour)), status: 403, code: "stale_request"},
		{name: "trailing data", body: append(sign(env, resp.RunnerName, "done", now), []byte(` {}`)...), status: 400, code: "malformed_request"},
		{name: "admission in progress", body: sign(pending, "attested-pending", "done", now), status: 409, code: "admission_in_progress"},
		{name: "store down at the lookup", fault: func(f *faultyStore) { f.runner = errStoreDown },
			body: sign(env, resp.RunnerName, "done", now), status: 503, code: "store_unavailable"},
		{name: "GitHub down", down: true, body: sign(env, resp.RunnerName, "done", now), status: 502, code: "github_unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.fault != nil {
				fs.set(tc.fault)
				defer fs.set((*faultyStore).clear)
			}
			h.gh.Down(tc.down)
			defer h.gh.Down(false)
			if status, code := h.post(gateapi.PathDeregister, tc.body); status != tc.status || code != tc.code {
				t.Fatalf("%d %s, want %d %s", status, code, tc.status, tc.code)
			}
			if _, ok := h.gh.Runner(resp.RunnerName); !ok {
				t.Fatal("runner removed by a refused deregistration")
			}
			if rec, err := h.store.Runner(ctx, resp.RunnerName); err != nil || rec.State != jobgate.StateLive {
				t.Fatalf("record after a refused deregistration: %+v, %v", rec, err)
			}
		})
	}

	// Removed at GitHub, but the store cannot record it: not reported as
	// done (the agent retries; reconcile settles the record).
	fs.set(func(f *faultyStore) { f.setState = errStoreDown })
	if status, code := h.post(gateapi.PathDeregister, sign(env, resp.RunnerName, "done", now)); status != 503 || code != "store_unavailable" {
		t.Fatalf("store down at the state change: %d %s", status, code)
	}
}

// TestChallengeRefusals: the challenge endpoint takes an empty JSON object
// only, and says so when its store cannot issue a nonce.
func TestChallengeRefusals(t *testing.T) {
	h, fs := faultyHarness(t)
	for _, tc := range []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"not JSON", "x", 400, "malformed_request"},
		{"unknown field", `{"nonce":"AAAA"}`, 400, "malformed_request"},
		{"trailing data", `{} {}`, 400, "malformed_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, code := h.post(gateapi.PathChallenge, []byte(tc.body)); status != tc.status || code != tc.code {
				t.Fatalf("%d %s, want %d %s", status, code, tc.status, tc.code)
			}
		})
	}
	fs.set(func(f *faultyStore) { f.newNonce = errStoreDown })
	if status, code := h.post(gateapi.PathChallenge, []byte(`{}`)); status != 500 || code != "internal" {
		t.Fatalf("store failing to issue a nonce: %d %s", status, code)
	}
}

// TestBodyReadFailure: a body that cannot be read is refused as malformed,
// on every endpoint that reads one.
func TestBodyReadFailure(t *testing.T) {
	h := newHarness(t)
	for _, path := range []string{gateapi.PathChallenge, gateapi.PathAdmit, gateapi.PathDeregister} {
		rec := httptest.NewRecorder()
		h.gate.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, iotest.ErrReader(errors.New("connection reset"))))
		var e gateapi.Error
		json.NewDecoder(rec.Body).Decode(&e)
		if rec.Code != 400 || e.Code != "malformed_request" {
			t.Errorf("%s: %d %s", path, rec.Code, e.Code)
		}
	}
}

// TestReadyAndAudit: readiness follows the store; the admin handler
// exports the audit log and says whether its chain holds.
func TestReadyAndAudit(t *testing.T) {
	h, fs := faultyHarness(t)
	ctx := context.Background()
	if _, err := h.admit(ctx); err != nil {
		t.Fatal(err)
	}
	h.admit(ctx) // key already admitted: a second record
	get := func(handler http.Handler, path string) (int, string) {
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	if status, _ := get(h.gate.Handler(), "/readyz"); status != 200 {
		t.Errorf("readyz: %d", status)
	}
	if status, body := get(h.gate.AdminHandler(), "/audit"); status != 200 || strings.Count(body, "\n") != 2 || !strings.Contains(body, `"reason":"key_already_admitted"`) {
		t.Errorf("audit export: %d %q", status, body)
	}
	if status, body := get(h.gate.AdminHandler(), "/audit/verify"); status != 200 || !strings.HasPrefix(body, "audit log OK: 2 records") {
		t.Errorf("audit verify: %d %q", status, body)
	}
	fs.set(func(f *faultyStore) {
		f.runners = errStoreDown
		f.editAudit = func(r *jobgate.AuditRecord) {
			if r.Seq == 1 {
				r.Result = "rejected"
			}
		}
	})
	if status, _ := get(h.gate.Handler(), "/readyz"); status != 503 {
		t.Errorf("readyz with the store down: %d", status)
	}
	if status, body := get(h.gate.AdminHandler(), "/audit/verify"); status != http.StatusConflict || !strings.Contains(body, "record 1 was edited") {
		t.Errorf("audit verify of an edited record: %d %q", status, body)
	}
}

// TestDeregisterCorruptRecord: a runner record whose key does not parse
// (a damaged store) refuses every deregistration instead of trusting it.
func TestDeregisterCorruptRecord(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	ch, err := h.client.Challenge(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := &jobgate.Runner{Name: "attested-corrupt", KeyDigest: attest.KeyDigest([]byte("junk")), EnvKey: []byte("junk")}
	if err := h.store.Reserve(ctx, ch.Nonce, h.clock.Now(), r, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.store.Activate(ctx, r, nil); err != nil {
		t.Fatal(err)
	}
	body := mustJSON(t, gateapi.DeregisterRequest{RunnerName: r.Name, Outcome: "done", SignedAt: h.clock.Now(), Signature: []byte{1}})
	if status, code := h.post(gateapi.PathDeregister, body); status != 500 || code != "internal" {
		t.Fatalf("%d %s", status, code)
	}
}
