package jobgate

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
	"github.com/attested-runner/attested-runner/provenance"
)

// Request size limits.
const (
	maxAdmitBody      = attest.MaxEvidenceSize + 64<<10
	maxSmallBody      = 16 << 10
	maxRequestedLabel = 16
)

// Handler is the gate's HTTP API.
func (g *Gate) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+gateapi.PathChallenge, g.handleChallenge)
	mux.HandleFunc("POST "+gateapi.PathAdmit, g.handleAdmit)
	mux.HandleFunc("POST "+gateapi.PathDeregister, g.handleDeregister)
	mux.HandleFunc("GET "+gateapi.PathRoots, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(g.rootsPEM)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if _, err := g.store.Runners(r.Context()); err != nil {
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("GET /metrics", g.handleMetrics)
	return mux
}

// AdminHandler serves the gate's operators on the admin socket: the audit
// log as JSON lines (GET /audit) and its chain check (GET /audit/verify).
// Serve it only on a socket reachable by the gate's own user.
func (g *Gate) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /audit", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		if err := WriteAuditJSONL(r.Context(), g.store, w); err != nil {
			g.log.Error("audit export", "err", err)
		}
	})
	mux.HandleFunc("GET /audit/verify", func(w http.ResponseWriter, r *http.Request) {
		n, head, err := VerifyAudit(r.Context(), g.store)
		if err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		fmt.Fprintf(w, "audit log OK: %d records, head %s\n", n, head)
	})
	return mux
}

// apiError is a refusal with its HTTP status and stable reason code.
type apiError struct {
	status int
	code   string
	err    error
}

func (e *apiError) Error() string { return e.err.Error() }
func (e *apiError) Unwrap() error { return e.err }

func refuse(status int, code string, err error) *apiError { return &apiError{status, code, err} }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, gateapi.Error{Code: e.code, Message: e.err.Error()})
}

// decodeBody reads a JSON body of at most limit bytes, strictly.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) *apiError {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return refuse(http.StatusRequestEntityTooLarge, "too_large", fmt.Errorf("request body over %d bytes", limit))
		}
		return refuse(http.StatusBadRequest, "malformed_request", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return refuse(http.StatusBadRequest, "malformed_request", fmt.Errorf("request JSON: %w", err))
	}
	if dec.More() {
		return refuse(http.StatusBadRequest, "malformed_request", errors.New("trailing data after the request JSON"))
	}
	return nil
}

func remote(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (g *Gate) handleChallenge(w http.ResponseWriter, r *http.Request) {
	var req gateapi.ChallengeRequest
	if e := decodeBody(w, r, maxChallengeBody, &req); e != nil {
		writeError(w, e)
		return
	}
	exp := g.now().Add(g.nonceTTL)
	nonce, err := g.store.NewNonce(r.Context(), exp)
	if err != nil {
		writeError(w, refuse(http.StatusInternalServerError, "internal", err))
		return
	}
	resp := gateapi.ChallengeResponse{Nonce: nonce, ExpiresAt: exp}
	if req.Activation != nil {
		cred, e := g.challengeCredential(r.Context(), nonce, req.Activation)
		if e != nil {
			g.auditReject(r, "challenge", e, "", "")
			g.log.Info("activation challenge refused", "reason", e.code, "remote", remote(r), "detail", e.err)
			writeError(w, e)
			return
		}
		resp.Credential = cred
	}
	writeJSON(w, http.StatusOK, resp)
}

func (g *Gate) handleAdmit(w http.ResponseWriter, r *http.Request) {
	var req gateapi.AdmitRequest
	if e := decodeBody(w, r, maxAdmitBody, &req); e != nil {
		g.metrics.admission("rejected", e.code)
		g.auditReject(r, "admit", e, "", "")
		writeError(w, e)
		return
	}
	resp, e := g.admit(r.Context(), &req, remote(r))
	if e != nil {
		writeError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// admit is one admission decision (BuildEnv L2.verify-before-dispatch,
// L3.verify-hw-before-dispatch): fresh single-use nonce, evidence verified
// against the policy, key never admitted before, labels allowed; only then a
// JIT runner is minted, sealed to the attested HPKE key, and certified.
// Every outcome is audited with its reason.
func (g *Gate) admit(ctx context.Context, req *gateapi.AdmitRequest, from string) (*gateapi.AdmitResponse, *apiError) {
	now := g.now()
	evDigest := attest.Digest(req.Evidence)
	reject := func(e *apiError, keyDigest string) *apiError {
		g.metrics.admission("rejected", e.code)
		g.auditRecord(ctx, &AuditRecord{Action: "admit", Result: "rejected", Reason: e.code, Remote: from,
			KeyDigest: keyDigest, EvidenceDigest: evDigest, Detail: e.err.Error()})
		g.log.Info("admission rejected", "reason", e.code, "key", short(keyDigest), "evidence", short(evDigest), "remote", from, "detail", e.err)
		return e
	}
	// Cheap checks first: a replayed or forged nonce costs no verification.
	if len(req.VMID) > 128 || strings.ContainsFunc(req.VMID, unicode.IsControl) {
		return nil, reject(refuse(http.StatusBadRequest, "malformed_request", errors.New("vmId over 128 bytes or with control characters")), "")
	}
	if len(req.Nonce) != nonceSize {
		return nil, reject(refuse(http.StatusForbidden, "nonce_unknown", ErrNonceUnknown), "")
	}
	if err := g.store.CheckNonce(ctx, req.Nonce, now); err != nil {
		return nil, reject(nonceError(err), "")
	}
	policy, workFolder := g.policy, ""
	var labels []string
	var terms *AdmissionTerms
	if g.hooks != nil {
		t, err := g.hooks.Admission(ctx, req.VMID)
		if err != nil {
			return nil, reject(refuse(http.StatusForbidden, "vm_refused", err), "")
		}
		terms = t
	}
	if terms != nil && terms.TrustedAK != nil {
		// The VM's own AK, the only one trusted for this admission.
		p := *g.policy
		p.TrustedAKs, p.TrustedAKRoots = []crypto.PublicKey{terms.TrustedAK}, nil
		policy = &p
	}
	if terms != nil && terms.Labels != nil {
		for _, l := range req.Labels {
			if !slices.Contains(terms.Labels, l) {
				return nil, reject(refuse(http.StatusForbidden, "label_not_allowed", fmt.Errorf("label %q is not one of the VM's pool's", l)), "")
			}
		}
		labels, workFolder = slices.Clone(terms.Labels), terms.WorkFolder
	} else {
		var err error
		if labels, err = g.grantLabels(req.Labels); err != nil {
			return nil, reject(refuse(http.StatusForbidden, "label_not_allowed", err), "")
		}
	}
	ev, err := attest.DecodeEvidence(req.Evidence)
	if err != nil {
		return nil, reject(evidenceError(err), "")
	}
	keyDigest := attest.KeyDigest(ev.EnvKey)
	challenge, ekNote := req.Nonce, ""
	if req.Activation != nil || len(req.ActivationSecret) > 0 {
		// EK credential activation (activation.go): the activated AK is
		// the only one trusted for this admission.
		trust := g.policy.TrustedEKs
		if terms != nil && terms.TrustedEKs != nil {
			trust = terms.TrustedEKs
		}
		ak, ek, e := g.activatedAK(ctx, req, ev, trust, now)
		if e != nil {
			if ek != nil {
				e.err = fmt.Errorf("EK %s: %w", short(ek.Digest), e.err)
			}
			return nil, reject(e, keyDigest)
		}
		if terms != nil && terms.TrustedAK != nil && !keyEqual(terms.TrustedAK, ak.Key) {
			return nil, reject(evidenceError(fmt.Errorf("%w: VM %s was launched with another AK", attest.ErrAKMismatch, req.VMID)), keyDigest)
		}
		p := *policy
		p.TrustedAKs, p.TrustedAKRoots, p.TrustedAKIntermediates = []crypto.PublicKey{ak.Key}, nil, nil
		policy = &p
		challenge = gateapi.AdmissionNonce(req.Nonce, req.ActivationSecret)
		ekNote = ", EK " + short(ek.Digest) + " (" + ek.Cert.Issuer.String() + ")"
	} else if terms != nil && terms.RequireActivation {
		return nil, reject(refuse(http.StatusForbidden, "activation_required", fmt.Errorf("VM %s must prove its AK by EK credential activation", req.VMID)), keyDigest)
	} else if len(policy.TrustedAKs) == 0 && len(policy.TrustedAKRoots) == 0 {
		// Only EK roots are trusted: an AK is trusted only once activated.
		return nil, reject(refuse(http.StatusForbidden, "activation_required", errors.New("no AK is trusted without EK credential activation")), keyDigest)
	}

	select {
	case g.verifySem <- struct{}{}:
	case <-ctx.Done():
		return nil, reject(refuse(http.StatusServiceUnavailable, "overloaded", ctx.Err()), keyDigest)
	}
	start := time.Now()
	claims, err := attest.Verify(ev, attest.AdmissionChallenge(challenge), policy)
	g.metrics.observeVerify(time.Since(start))
	<-g.verifySem
	if err != nil {
		return nil, reject(evidenceError(err), keyDigest)
	}
	if terms != nil && terms.ImageID != "" && claims.ImageID != terms.ImageID {
		return nil, reject(refuse(http.StatusForbidden, "vm_image_mismatch",
			fmt.Errorf("VM %s was launched with image %s, but its measurements match %s", req.VMID, terms.ImageID, claims.ImageID)), keyDigest)
	}

	name := g.runnerName(keyDigest)
	rec := &Runner{
		Name: name, KeyDigest: keyDigest, EnvKey: ev.EnvKey, Labels: labels, EvidenceDigest: evDigest,
		VMID: req.VMID, AdmittedAt: now, ExpiresAt: now.Add(g.certTTL),
	}
	// One transaction: the nonce is spent and the key is taken, or neither.
	if err := g.store.Reserve(ctx, req.Nonce, now, rec, nil); err != nil {
		switch {
		case errors.Is(err, ErrKeyAdmitted):
			return nil, reject(refuse(http.StatusConflict, "key_already_admitted", err), keyDigest)
		case errors.Is(err, ErrNonceUnknown), errors.Is(err, ErrNonceUsed), errors.Is(err, ErrNonceExpired):
			return nil, reject(nonceError(err), keyDigest)
		}
		return nil, reject(refuse(http.StatusServiceUnavailable, "store_unavailable", err), keyDigest)
	}

	// GitHub. On failure the reservation is released (the agent may retry
	// with a new nonce and the same key); the nonce stays spent.
	id, jit, err := g.registry.Mint(ctx, name, labels, workFolder)
	if err != nil {
		e := refuse(http.StatusBadGateway, "github_unavailable", err)
		g.metrics.admission("rejected", e.code)
		rel := &AuditRecord{Time: now.UTC(), Action: "admit", Result: "failed", Reason: e.code, Remote: from, KeyDigest: keyDigest,
			EvidenceDigest: evDigest, RunnerName: name, Detail: err.Error()}
		if rerr := g.store.Release(context.WithoutCancel(ctx), keyDigest, rel); rerr != nil {
			g.log.Error("releasing reservation after GitHub failure", "runner", name, "err", rerr)
		}
		g.log.Warn("admission failed at GitHub", "runner", name, "err", err)
		return nil, e
	}
	rec.ID = id

	cert := provenance.CertificateFor(claims)
	if g.policy.AllowSoftwareTPMUnsafe {
		// The software-TPM label is the agent's own word, and whoever holds
		// a swtpm's state can drop it: a gate that admits software TPMs
		// certifies every environment as one (level 0).
		cert.SoftwareTPM, cert.Level = true, 0
	}
	cert.GateID, cert.BuilderID = g.gateID, g.builderID
	cert.RunnerName, cert.Labels = name, labels
	cert.EvidenceDigest, cert.PolicyDigest = evDigest, g.policyDigest
	cert.DirectKernelBoot = g.policy.DirectKernelBoot
	cert.IssuedAt, cert.NotAfter = now.UTC().Truncate(time.Second), now.Add(g.certTTL).UTC().Truncate(time.Second)
	certBundle, err := provenance.IssueEnvCert(ctx, g.signer, cert)
	resp := &gateapi.AdmitResponse{
		RunnerName: name, RunnerID: id, Labels: labels,
		EnvironmentCertificate: certBundle, ExpiresAt: cert.NotAfter, Sigstore: g.sigstore,
	}
	if err == nil {
		resp.SealedJITConfig, err = attest.Seal(ev.HPKEPublicKey, gateapi.JITContext(name), []byte(jit))
	}
	if err == nil {
		// The agent accepts the answer only with this signature by a gate
		// key pinned in its image: a party in between (a plain-http hop, a
		// TLS terminator) cannot seal a configuration of its own choosing
		// to the attested key and pass it off with the genuine certificate.
		resp.DeliverySignature, err = g.signer.Sign(rand.Reader, gateapi.DeliveryDigest(req.Nonce, req.Evidence, resp), crypto.SHA256)
	}
	if err == nil {
		err = g.store.Activate(context.WithoutCancel(ctx), rec, &AuditRecord{Time: now.UTC(), Action: "admit", Result: "accepted", Remote: from,
			KeyDigest: keyDigest, EvidenceDigest: evDigest, RunnerName: name, RunnerID: id,
			Detail: fmt.Sprintf("image %s, %s, labels %v%s", claims.ImageID, provenance.LevelName(claims.Level), labels, ekNote)})
	}
	if err != nil {
		// Never leave a minted runner behind without a record.
		if rerr := g.registry.Remove(context.WithoutCancel(ctx), id); rerr != nil {
			g.log.Error("removing runner after a failed admission", "runner", name, "err", rerr)
		}
		g.store.Release(context.WithoutCancel(ctx), keyDigest, &AuditRecord{Time: now.UTC(), Action: "admit", Result: "failed", Reason: "internal",
			Remote: from, KeyDigest: keyDigest, RunnerName: name, Detail: err.Error()})
		g.metrics.admission("rejected", "internal")
		return nil, refuse(http.StatusInternalServerError, "internal", err)
	}
	g.metrics.admission("accepted", "")
	g.log.Info("admitted", "runner", name, "runner_id", id, "key", short(keyDigest), "image", claims.ImageID,
		"level", claims.Level, "labels", labels, "vm", req.VMID, "remote", from)
	if g.hooks != nil {
		g.hooks.Admitted(context.WithoutCancel(ctx), req.VMID, rec)
	}
	return resp, nil
}

// grantLabels adds the requested labels to the base labels, if the policy
// allows every one of them: labels come from policy, never from the request
// alone.
func (g *Gate) grantLabels(requested []string) ([]string, error) {
	if len(requested) > maxRequestedLabel {
		return nil, fmt.Errorf("%d labels requested, limit %d", len(requested), maxRequestedLabel)
	}
	out := slices.Clone(g.labels)
	for _, l := range requested {
		if slices.Contains(out, l) {
			continue
		}
		if !g.allowedLabels[l] {
			return nil, fmt.Errorf("label %q is not allowed by the gate's policy", l)
		}
		out = append(out, l)
	}
	return out, nil
}

func nonceError(err error) *apiError {
	switch {
	case errors.Is(err, ErrNonceUsed):
		return refuse(http.StatusForbidden, "nonce_used", err)
	case errors.Is(err, ErrNonceExpired):
		return refuse(http.StatusForbidden, "nonce_expired", err)
	case errors.Is(err, ErrNonceUnknown):
		return refuse(http.StatusForbidden, "nonce_unknown", err)
	}
	return refuse(http.StatusServiceUnavailable, "store_unavailable", err)
}

// evidenceReasons maps attest's sentinels to stable reason codes.
var evidenceReasons = []struct {
	err  error
	code string
}{
	{attest.ErrTooLarge, "evidence_too_large"},
	{attest.ErrMalformedEvidence, "evidence_malformed"},
	{attest.ErrSoftwareTPM, "software_tpm"},
	{attest.ErrUntrustedAK, "untrusted_ak"},
	{attest.ErrNonceMismatch, "nonce_mismatch"},
	{attest.ErrQuoteSignature, "quote_signature"},
	{attest.ErrEventLogEmpty, "event_log_empty"},
	{attest.ErrEventLogReplay, "event_log_replay"},
	{attest.ErrReferenceMismatch, "reference_mismatch"},
	{attest.ErrCELReplay, "lifecycle_replay"},
	{attest.ErrUnknownEvent, "lifecycle_unknown_event"},
	{attest.ErrCELOrder, "lifecycle_order"},
	{attest.ErrAgentNotAllowed, "agent_not_allowed"},
	{attest.ErrKeyNotCertified, "key_not_certified"},
	{attest.ErrTDXQuote, "tdx_quote"},
	{attest.ErrTDXDebug, "tdx_debug"},
	{attest.ErrTDXQEIdentity, "tdx_qe_identity"},
	{attest.ErrTDXTCBStatus, "tdx_tcb_status"},
	{attest.ErrTDXCollateralExpired, "tdx_collateral_expired"},
	{attest.ErrTDXCollateral, "tdx_collateral"},
	{attest.ErrSNPReport, "snp_report"},
	{attest.ErrSNPDebug, "snp_debug"},
	{attest.ErrSNPPolicy, "snp_policy"},
	{attest.ErrSNPTCB, "snp_tcb"},
	{attest.ErrAzureHCL, "azure_hcl"},
	{attest.ErrAKNotBound, "hcl_ak_not_bound"},
	{attest.ErrBadChallenge, "bad_challenge"},
	{attest.ErrEKUntrusted, "ek_untrusted"},
	{attest.ErrEKExpired, "ek_expired"},
	{attest.ErrEKRevoked, "ek_revoked"},
	{attest.ErrEKCRLExpired, "ek_crl_expired"},
	{attest.ErrAKAttributes, "ak_attributes"},
	{attest.ErrEKActivation, "ek_activation_failed"},
	{attest.ErrAKMismatch, "ak_name_mismatch"},
}

func evidenceError(err error) *apiError {
	for _, r := range evidenceReasons {
		if errors.Is(err, r.err) {
			status := http.StatusForbidden
			if r.code == "evidence_too_large" {
				status = http.StatusRequestEntityTooLarge
			}
			if r.code == "evidence_malformed" {
				status = http.StatusBadRequest
			}
			return refuse(status, r.code, err)
		}
	}
	return refuse(http.StatusForbidden, "evidence_rejected", err)
}

func (g *Gate) auditReject(r *http.Request, action string, e *apiError, key, ev string) {
	g.auditRecord(r.Context(), &AuditRecord{Action: action, Result: "rejected", Reason: e.code, Remote: remote(r),
		KeyDigest: key, EvidenceDigest: ev, Detail: e.err.Error()})
}

func (g *Gate) auditRecord(ctx context.Context, rec *AuditRecord) {
	rec.Time = g.now().UTC()
	if err := g.store.Audit(context.WithoutCancel(ctx), rec); err != nil {
		g.log.Error("audit append failed", "err", err, "action", rec.Action, "result", rec.Result)
	}
}

func (g *Gate) handleDeregister(w http.ResponseWriter, r *http.Request) {
	var req gateapi.DeregisterRequest
	if e := decodeBody(w, r, maxSmallBody, &req); e != nil {
		g.auditReject(r, "deregister", e, "", "")
		writeError(w, e)
		return
	}
	resp, e := g.deregister(r.Context(), &req, remote(r))
	if e != nil {
		writeError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// deregister removes a runner at its agent's request, authenticated by a
// signature with the environment key it was admitted with. Idempotent.
func (g *Gate) deregister(ctx context.Context, req *gateapi.DeregisterRequest, from string) (*gateapi.DeregisterResponse, *apiError) {
	now := g.now()
	reject := func(e *apiError, key string) *apiError {
		g.auditRecord(ctx, &AuditRecord{Action: "deregister", Result: "rejected", Reason: e.code, Remote: from,
			RunnerName: req.RunnerName, KeyDigest: key, Detail: e.err.Error()})
		g.log.Info("deregistration rejected", "runner", req.RunnerName, "reason", e.code, "detail", e.err)
		return e
	}
	rec, err := g.store.Runner(ctx, req.RunnerName)
	if err != nil {
		if errors.Is(err, ErrNoRunner) {
			return nil, reject(refuse(http.StatusNotFound, "unknown_runner", err), "")
		}
		return nil, reject(refuse(http.StatusServiceUnavailable, "store_unavailable", err), "")
	}
	pub, err := attest.ParseEnvKey(rec.EnvKey)
	if err != nil {
		return nil, reject(refuse(http.StatusInternalServerError, "internal", err), rec.KeyDigest)
	}
	if req.Outcome != "" && !slices.Contains(gateapi.Outcomes, req.Outcome) {
		return nil, reject(refuse(http.StatusBadRequest, "malformed_request", fmt.Errorf("unknown outcome %q", req.Outcome)), rec.KeyDigest)
	}
	digest := sha256.Sum256(gateapi.DeregisterMessage(req.RunnerName, req.Outcome, req.Reason, req.SignedAt))
	if !ecdsa.VerifyASN1(pub, digest[:], req.Signature) {
		return nil, reject(refuse(http.StatusForbidden, "bad_signature", errors.New("signature is not by the runner's environment key")), rec.KeyDigest)
	}
	if d := now.Sub(req.SignedAt); d > g.deregisterSkew || d < -g.deregisterSkew {
		return nil, reject(refuse(http.StatusForbidden, "stale_request", fmt.Errorf("signed at %s, %s away from the gate's clock", req.SignedAt.Format(time.RFC3339), d.Round(time.Second))), rec.KeyDigest)
	}
	outcome := req.Outcome
	if outcome == "" {
		outcome = "failed"
	}
	if rec.State != StatePending {
		g.metrics.outcome(outcome)
		if outcome == "image_out_of_date" {
			// Every VM of this image will end the same way: say so loudly.
			g.log.Warn("runner image out of date: rebuild it with a current runner release", "runner", rec.Name, "detail", req.Reason)
		}
	}
	switch rec.State {
	case StateDeregistered, StateRemoved:
		// Often GitHub already deleted the ephemeral runner after its job
		// and reconcile recorded it: still one decision, still audited.
		g.auditRecord(ctx, &AuditRecord{Action: "deregister", Result: "noop", Reason: "already_" + string(rec.State), Remote: from,
			RunnerName: rec.Name, RunnerID: rec.ID, KeyDigest: rec.KeyDigest, Detail: "agent teardown: " + req.Reason, Outcome: outcome})
		if g.hooks != nil {
			g.hooks.Deregistered(context.WithoutCancel(ctx), rec, outcome)
		}
		return &gateapi.DeregisterResponse{Removed: false, Detail: "already " + string(rec.State)}, nil
	case StatePending:
		return nil, reject(refuse(http.StatusConflict, "admission_in_progress", errors.New("the runner's admission has not completed")), rec.KeyDigest)
	}
	if g.hooks != nil && rec.VMID != "" {
		// A fleet runner: GitHub deletes an ephemeral runner after its job,
		// and the fleet's reconcile removes the registration only if
		// GitHub's workflow_job completed does not say it ran one. One
		// GitHub request per runner's life (the mint), not two.
		if err := g.store.SetState(context.WithoutCancel(ctx), rec.Name, StateDeregistered, now, &AuditRecord{
			Time: now.UTC(), Action: "deregister", Result: "deregistered", Remote: from, RunnerName: rec.Name, RunnerID: rec.ID,
			KeyDigest: rec.KeyDigest, Detail: "agent teardown: " + req.Reason + "; the fleet settles the GitHub registration", Outcome: outcome,
		}); err != nil {
			return nil, refuse(http.StatusServiceUnavailable, "store_unavailable", err)
		}
		g.log.Info("deregistered", "runner", rec.Name, "runner_id", rec.ID, "vm", rec.VMID, "reason", req.Reason)
		g.hooks.Deregistered(context.WithoutCancel(ctx), rec, outcome)
		return &gateapi.DeregisterResponse{Removed: false, Detail: "deregistered; the fleet settles the GitHub registration"}, nil
	}
	if err := g.registry.Remove(ctx, rec.ID); err != nil {
		e := refuse(http.StatusBadGateway, "github_unavailable", err)
		g.auditRecord(ctx, &AuditRecord{Action: "deregister", Result: "failed", Reason: e.code, Remote: from,
			RunnerName: rec.Name, RunnerID: rec.ID, KeyDigest: rec.KeyDigest, Detail: err.Error()})
		return nil, e
	}
	if err := g.store.SetState(context.WithoutCancel(ctx), rec.Name, StateDeregistered, now, &AuditRecord{
		Time: now.UTC(), Action: "deregister", Result: "removed", Remote: from, RunnerName: rec.Name, RunnerID: rec.ID,
		KeyDigest: rec.KeyDigest, Detail: "agent teardown: " + req.Reason, Outcome: outcome,
	}); err != nil {
		return nil, refuse(http.StatusServiceUnavailable, "store_unavailable", err)
	}
	g.log.Info("deregistered", "runner", rec.Name, "runner_id", rec.ID, "reason", req.Reason)
	if g.hooks != nil {
		g.hooks.Deregistered(context.WithoutCancel(ctx), rec, outcome)
	}
	return &gateapi.DeregisterResponse{Removed: true, Detail: "runner removed from GitHub"}, nil
}

func (g *Gate) handleMetrics(w http.ResponseWriter, r *http.Request) {
	if rs, err := g.store.Runners(r.Context()); err == nil {
		var live int64
		for _, x := range rs {
			if x.State == StateLive {
				live++
			}
		}
		g.metrics.live.Store(live)
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	g.metrics.write(w)
}

// keyEqual reports whether two public keys are the same key.
func keyEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

func short(s string) string {
	if len(s) > 16 {
		return s[:16]
	}
	return s
}
