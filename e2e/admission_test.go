package e2e

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/e2e/harness"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
	gecel "github.com/google/go-eventlog/cel"
	elt "github.com/google/go-eventlog/testdata"
)

// echoJob is a job with one trivial step.
func echoJob() []fakeStep {
	return []fakeStep{{Name: "hello", Run: "echo hello from an attested runner"}}
}

// postAdmit sends a raw admission body to the gate, as an attacker with a
// captured request would, and returns the status and the gate's error.
func postAdmit(t testing.TB, gateURL string, body []byte) (int, gateapi.Error) {
	t.Helper()
	resp, err := http.Post(gateURL+gateapi.PathAdmit, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e gateapi.Error
	if resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("gate answered %d with %q", resp.StatusCode, b)
		}
	}
	return resp.StatusCode, e
}

// requireRejected asserts a gate client error is a definitive refusal with
// this HTTP status and reason code.
func requireRejected(t testing.TB, err error, status int, code string) {
	t.Helper()
	var rej *gateapi.RejectedError
	if !errors.As(err, &rej) || rej.Status != status || rej.Err.Code != code {
		t.Fatalf("want refusal %d %s, got %v", status, code, err)
	}
}

// successfulAdmit returns the one admission exchange the gate accepted.
func successfulAdmit(t testing.TB, p *harness.Proxy) harness.Exchange {
	t.Helper()
	var ok []harness.Exchange
	for _, x := range p.Exchanges(gateapi.PathAdmit) {
		if x.Status == http.StatusOK {
			ok = append(ok, x)
		}
	}
	if len(ok) != 1 {
		t.Fatalf("%d successful admissions through the proxy, want 1", len(ok))
	}
	return ok[0]
}

// requireNotAdmitted asserts an agent ended without admission: exit 1,
// "not admitted", powered off, and GitHub never minted a runner.
func requireNotAdmitted(e *env, x *harness.AgentExit) {
	e.t.Helper()
	if x.Code != 1 || !strings.HasPrefix(x.Summary, "attested-runner: not admitted (admitted false") || !x.PoweredOff {
		e.t.Fatalf("agent exit %+v: want not admitted, powered off", x)
	}
	if n := e.GitHub.JITMints(); n != 0 {
		e.t.Fatalf("%d runners minted for a rejected environment", n)
	}
	e.noRunnersLeft()
}

// TestReplayOfOldAdmissionRequestRejected: an attacker who captured an
// agent's admission request (nonce + evidence) re-sends the exact bytes.
// The nonce is single use: the gate refuses with nonce_used, mints nothing,
// and says so in its audit log.
func TestReplayOfOldAdmissionRequestRejected(t *testing.T) {
	e, _ := newEnv(t, envOptions{})
	a := e.startAgent(harness.AgentOptions{})
	if _, err := a.WaitLog(e.ctx, "runner listening", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	captured := successfulAdmit(t, e.Proxy)
	status, gerr := postAdmit(t, e.Gate.URL, captured.Request)
	if status != http.StatusForbidden || gerr.Code != "nonce_used" {
		t.Fatalf("replay answered %d %+v, want 403 nonce_used", status, gerr)
	}
	e.queue(201, echoJob()...)
	if x := e.wait(a); x.Code != 0 {
		t.Fatalf("agent exit %+v", x)
	}
	if n := e.GitHub.JITMints(); n != 1 {
		t.Fatalf("%d runners minted, want 1", n)
	}
	recs := e.audit()
	e.requireAudit(recs, "admit", "accepted", "")
	r := e.requireAudit(recs, "admit", "rejected", "nonce_used")
	if r.EvidenceDigest != attest.Digest(capturedEvidence(t, captured.Request)) {
		t.Errorf("the rejection does not name the replayed evidence")
	}
}

func capturedEvidence(t testing.TB, body []byte) []byte {
	t.Helper()
	var req gateapi.AdmitRequest
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatal(err)
	}
	return req.Evidence
}

// TestNonceReuseRejected: two environments (both enrolled, both genuine)
// present evidence bound to the same nonce at the same time; a third
// presents a nonce the gate never issued. Exactly one is admitted: a nonce
// is spent atomically with the key it admits.
func TestNonceReuseRejected(t *testing.T) {
	e, ms := newEnv(t, envOptions{machines: 2})
	gate := &gateapi.Client{BaseURL: e.Gate.URL}
	ch, err := gate.Challenge(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var reqs []*gateapi.AdmitRequest
	for _, m := range ms {
		c, closeTPM, err := m.Collector(e.AgentDigest)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := c.Collect(attest.AdmissionChallenge(ch.Nonce))
		if err != nil {
			t.Fatal(err)
		}
		closeTPM()
		evJSON, _ := ev.Encode()
		reqs = append(reqs, &gateapi.AdmitRequest{Nonce: ch.Nonce, Evidence: evJSON})
	}
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = gate.Admit(e.ctx, r) }()
	}
	wg.Wait()
	admitted, refused := 0, 0
	for _, err := range errs {
		if err == nil {
			admitted++
			continue
		}
		requireRejected(t, err, http.StatusForbidden, "nonce_used")
		refused++
	}
	if admitted != 1 || refused != 1 {
		t.Fatalf("%d admitted, %d refused with one nonce: %v", admitted, refused, errs)
	}
	// A nonce the gate never issued (the issued one with a bit flipped).
	forged := *reqs[1]
	forged.Nonce = bytes.Clone(ch.Nonce)
	forged.Nonce[0] ^= 1
	_, err = gate.Admit(e.ctx, &forged)
	requireRejected(t, err, http.StatusForbidden, "nonce_unknown")

	if n := e.GitHub.JITMints(); n != 1 {
		t.Fatalf("%d runners minted, want 1", n)
	}
	recs := e.audit()
	e.requireAudit(recs, "admit", "accepted", "")
	e.requireAudit(recs, "admit", "rejected", "nonce_used")
	e.requireAudit(recs, "admit", "rejected", "nonce_unknown")
}

// TestEvidenceFromUnenrolledTPMRejected: a genuine agent on a machine whose
// TPM nobody enrolled (another TPM: its AK is not in policy.trustedAKs)
// is refused with untrusted_ak; it never registers and powers off.
func TestEvidenceFromUnenrolledTPMRejected(t *testing.T) {
	e, _ := newEnv(t, envOptions{})
	stranger, err := e.NewMachine(e.ctx, "stranger", harness.MachineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x := e.wait(e.startAgent(harness.AgentOptions{Machine: stranger}))
	requireNotAdmitted(e, x)
	r := e.requireAudit(e.audit(), "admit", "rejected", "untrusted_ak")
	if !strings.Contains(r.Detail, attest.ErrUntrustedAK.Error()) {
		t.Errorf("audit detail %q", r.Detail)
	}
}

// TestPCRTamperedAfterEnrollmentRejected: after the machine was enrolled
// and its reference values taken, something extends a boot PCR that the
// firmware event log does not account for (a bootkit measuring itself).
// The quoted PCRs no longer replay from the log: event_log_replay.
func TestPCRTamperedAfterEnrollmentRejected(t *testing.T) {
	e, _ := newEnv(t, envOptions{})
	if err := e.M.ExtendPCR(4, []byte("an unlogged bootloader")); err != nil {
		t.Fatal(err)
	}
	x := e.wait(e.startAgent(harness.AgentOptions{}))
	requireNotAdmitted(e, x)
	r := e.requireAudit(e.audit(), "admit", "rejected", "event_log_replay")
	if !strings.Contains(r.Detail, attest.ErrEventLogReplay.Error()) {
		t.Errorf("audit detail %q", r.Detail)
	}
}

// TestLifecycleLogTamperedRejected: a man in the middle rewrites the
// agent-start record of the lifecycle log (CEL) in the evidence an agent
// sends, claiming another agent binary, and recomputes the record's
// digests so the log is well-formed. It no longer replays to the quoted
// PCR 13: lifecycle_replay.
func TestLifecycleLogTamperedRejected(t *testing.T) {
	e, _ := newEnv(t, envOptions{})
	var tampered sync.Once
	e.Proxy.SetHook(func(method, path string, body []byte) []byte {
		if path != gateapi.PathAdmit {
			return body
		}
		out := body
		tampered.Do(func() { out = tamperCEL(t, body) })
		return out
	})
	x := e.wait(e.startAgent(harness.AgentOptions{}))
	requireNotAdmitted(e, x)
	xs := e.Proxy.Exchanges(gateapi.PathAdmit)
	if len(xs) != 1 || bytes.Equal(xs[0].Request, xs[0].Original) {
		t.Fatalf("want one tampered admission, got %d", len(xs))
	}
	r := e.requireAudit(e.audit(), "admit", "rejected", "lifecycle_replay")
	if !strings.Contains(r.Detail, attest.ErrCELReplay.Error()) {
		t.Errorf("audit detail %q", r.Detail)
	}
}

// tamperCEL rewrites the agent-start event of an admission request's
// lifecycle log, with consistent record digests.
func tamperCEL(t testing.TB, body []byte) []byte {
	var req gateapi.AdmitRequest
	if err := json.Unmarshal(body, &req); err != nil {
		t.Errorf("admission body: %v", err)
		return body
	}
	ev, err := attest.DecodeEvidence(req.Evidence)
	if err != nil {
		t.Errorf("evidence: %v", err)
		return body
	}
	_, events, err := attest.DecodeCEL(ev.CEL)
	if err != nil || len(events) < 2 || events[0].Type != attest.EventAgentStart {
		t.Errorf("lifecycle log: %v %v", events, err)
		return body
	}
	events[0] = attest.AgentStartEvent(sha256.Sum256([]byte("a patched agent")))
	log := gecel.NewPCR()
	for _, ev := range events {
		if err := log.AppendEvent(ev, []crypto.Hash{crypto.SHA256}, attest.LifecyclePCR, func(crypto.Hash, int, []byte) error { return nil }); err != nil {
			t.Errorf("rebuilding the log: %v", err)
			return body
		}
	}
	var buf bytes.Buffer
	if err := log.EncodeCEL(&buf); err != nil {
		t.Errorf("encoding the log: %v", err)
		return body
	}
	ev.CEL = buf.Bytes()
	if req.Evidence, err = ev.Encode(); err != nil {
		t.Errorf("evidence: %v", err)
		return body
	}
	out, err := json.Marshal(req)
	if err != nil {
		t.Errorf("admission body: %v", err)
		return body
	}
	return out
}

// TestReferenceValueRemovedFromPolicyRejected: the machine's image is
// admitted; then the admin withdraws that image's reference values (the
// gate restarts with a reference-values file listing only another image).
// The same machine, rebooted, is refused with reference_mismatch.
func TestReferenceValueRemovedFromPolicyRejected(t *testing.T) {
	e, _ := newEnv(t, envOptions{})
	e.queue(301, echoJob()...)
	if x := e.wait(e.startAgent(harness.AgentOptions{})); x.Code != 0 {
		t.Fatalf("first boot: %+v", x)
	}
	// Reference values of another image only: a different firmware and
	// boot chain (a real Ubuntu 21.04 boot without Secure Boot).
	other, err := e.NewMachine(e.ctx, "other-image", harness.MachineOptions{BootLog: elt.Ubuntu2104NoSecureBootEventLog, SecureBootOff: true})
	if err != nil {
		t.Fatal(err)
	}
	withdrawn := filepath.Join(e.Dir, "reference-values-withdrawn.json")
	if err := e.WriteReferenceValues(other, "ubuntu-2104-image", withdrawn); err != nil {
		t.Fatal(err)
	}
	if err := e.Gate.Reconfigure(e.ctx, func(c *jobgate.Config) { c.Policy.ReferenceValues = []string{withdrawn} }); err != nil {
		t.Fatal(err)
	}
	if err := e.M.Reboot(e.ctx); err != nil {
		t.Fatal(err)
	}
	x := e.wait(e.startAgent(harness.AgentOptions{}))
	if x.Code != 1 || !strings.Contains(x.Summary, "not admitted") || !x.PoweredOff {
		t.Fatalf("second boot: %+v", x)
	}
	if n := e.GitHub.JITMints(); n != 1 {
		t.Fatalf("%d runners minted, want 1 (the first boot)", n)
	}
	recs := e.audit()
	e.requireAudit(recs, "admit", "accepted", "")
	r := e.requireAudit(recs, "admit", "rejected", "reference_mismatch")
	if !strings.Contains(r.Detail, attest.ErrReferenceMismatch.Error()) {
		t.Errorf("audit detail %q", r.Detail)
	}
}

// TestSameEnvKeyAdmittedTwiceRejected: an environment that was admitted
// asks again with the same environment key (fresh nonce, fresh and valid
// evidence): a key is admitted at most once, ever (key_already_admitted).
func TestSameEnvKeyAdmittedTwiceRejected(t *testing.T) {
	e, _ := newEnv(t, envOptions{})
	c, closeTPM, err := e.M.Collector(e.AgentDigest)
	if err != nil {
		t.Fatal(err)
	}
	defer closeTPM()
	gate := &gateapi.Client{BaseURL: e.Gate.URL}
	admit := func() (*gateapi.AdmitResponse, error) {
		ch, err := gate.Challenge(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := c.Collect(attest.AdmissionChallenge(ch.Nonce))
		if err != nil {
			t.Fatal(err)
		}
		evJSON, _ := ev.Encode()
		return gate.Admit(e.ctx, &gateapi.AdmitRequest{Nonce: ch.Nonce, Evidence: evJSON})
	}
	first, err := admit()
	if err != nil {
		t.Fatal(err)
	}
	_, err = admit()
	requireRejected(t, err, http.StatusConflict, "key_already_admitted")
	if n := e.GitHub.JITMints(); n != 1 {
		t.Fatalf("%d runners minted, want 1", n)
	}
	recs := e.audit()
	acc := e.requireAudit(recs, "admit", "accepted", "")
	rej := e.requireAudit(recs, "admit", "rejected", "key_already_admitted")
	if key := attest.KeyDigest(c.EnvKey()); acc.KeyDigest != key || rej.KeyDigest != key || acc.RunnerName != first.RunnerName {
		t.Errorf("audit records name keys %s / %s, want %s", acc.KeyDigest, rej.KeyDigest, key)
	}
}

// TestCapturedJITConfigUnusableByAnotherAgent: an attacker on the network
// captures the admission response. The runner's JIT configuration in it is
// HPKE-sealed to the attested environment: another agent's key cannot open
// it (attest.ErrSealed), the sealed bytes are no runner configuration, and
// the configuration in clear (which the genuine runner decoded into its
// tmpfs directory) appears nowhere in the gate's traffic, log or audit log.
func TestCapturedJITConfigUnusableByAnotherAgent(t *testing.T) {
	e, _ := newEnv(t, envOptions{})
	e.queue(401, echoJob()...)
	a := e.startAgent(harness.AgentOptions{})
	if x := e.wait(a); x.Code != 0 {
		t.Fatalf("agent exit %+v", x)
	}
	var resp gateapi.AdmitResponse
	if err := json.Unmarshal(successfulAdmit(t, e.Proxy).Response, &resp); err != nil {
		t.Fatal(err)
	}
	// Another agent, with its own attested HPKE key, cannot open it.
	other, err := attest.NewHPKEKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Open(gateapi.JITContext(resp.RunnerName), resp.SealedJITConfig); !errors.Is(err, attest.ErrSealed) {
		t.Fatalf("another key opened the sealed JIT config: %v", err)
	}
	// The sealed bytes handed to a runner are not a configuration.
	out, code := runListener(t, e, encodeStd(resp.SealedJITConfig))
	if code != 1 || !strings.Contains(out, "invalid JIT config") {
		t.Fatalf("listener given the sealed config: exit %d:\n%s", code, out)
	}
	// The clear configuration, as the genuine runner decoded it.
	secrets := jitSecrets(t, a.RunnerDir)
	var seen [][]byte
	for _, x := range e.Proxy.Exchanges("") {
		seen = append(seen, x.Request, x.Response)
	}
	gateLog, _ := readFile(e.Gate.LogPath)
	seen = append(seen, gateLog)
	recs := e.audit()
	auditJSON, _ := json.Marshal(recs)
	seen = append(seen, auditJSON)
	for name, s := range secrets {
		for _, b := range seen {
			if bytes.Contains(b, []byte(s)) {
				t.Fatalf("the JIT config's %s travelled or was logged in clear", name)
			}
		}
	}
	e.requireAudit(recs, "admit", "accepted", "")
}
