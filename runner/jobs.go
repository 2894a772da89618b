package runner

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/fileio"
	"github.com/attested-runner/attested-runner/provenance"
)

// Socket errors the job and its hooks see.
var (
	ErrJobAlreadyStarted = errors.New("this runner is single use: a job was already dispatched to it")
	ErrNoJob             = errors.New("no job is running on this runner")
)

// handleSocket serves one request from the runner user (see socket.go).
func (a *Agent) handleSocket(ctx context.Context, op string, body []byte, files []int) (any, error) {
	switch op {
	case OpJobStarted:
		var rep HookReport
		if err := decodeStrict(body, &rep); err != nil {
			return nil, fmt.Errorf("%w: hook report: %v", ErrSocketProtocol, err)
		}
		resp, err := a.jobStarted(ctx, &rep)
		if err != nil {
			a.log.Warn("job start refused", "err", err)
		}
		return resp, err
	case OpJobCompleted:
		var rep HookReport
		if err := decodeStrict(body, &rep); err != nil {
			return nil, fmt.Errorf("%w: hook report: %v", ErrSocketProtocol, err)
		}
		return struct{}{}, a.jobCompleted(&rep)
	case OpAttest:
		var req AttestRequest
		if err := decodeStrict(body, &req); err != nil {
			return nil, fmt.Errorf("%w: attest request: %v", ErrSocketProtocol, err)
		}
		resp, err := a.attestFiles(ctx, &req, files)
		if err != nil {
			a.log.Warn("attest refused", "err", err)
		}
		return resp, err
	}
	return nil, fmt.Errorf("%w: unknown operation %q", ErrSocketProtocol, op)
}

// decodeStrict decodes one JSON value: unknown fields and trailing data are
// errors.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data")
	}
	return nil
}

// jobStarted records the job the runner actually received, extends the
// job-start separator and signs the dispatch attestation, all before the
// hook returns: no job code runs before the separator (BuildEnv
// L2.agent-dispatch, L3.dispatch-includes-hw). One job per environment.
func (a *Agent) jobStarted(ctx context.Context, rep *HookReport) (*JobStartedResponse, error) {
	if err := rep.validate(); err != nil {
		return nil, err
	}
	job := rep.Job()
	if err := job.Validate(); err != nil {
		return nil, fmt.Errorf("job record: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.job != nil {
		return nil, ErrJobAlreadyStarted
	}
	if a.admission == nil {
		return nil, errors.New("not admitted")
	}
	if job.RunnerName != a.admission.RunnerName {
		return nil, fmt.Errorf("the runner reports name %q, the gate admitted %q", job.RunnerName, a.admission.RunnerName)
	}
	buildID := job.BuildID()
	// Taken before anything can fail half-way: a refused second start
	// must hold even if this one fails below.
	a.job = &jobState{report: rep, job: job, buildID: buildID, startedAt: a.cfg.Now().UTC()}
	a.jobStartedFlag.Store(true)
	a.job.actions = ReadWorkerActions(filepath.Join(a.cfg.RunnerDir, "_diag"), a.cfg.RunnerUID)
	if !a.job.actions.Complete {
		a.log.Warn("the job's actions are recorded as missing", "reason", a.job.actions.Reason)
	}
	if err := a.cfg.Collector.Extend(attest.JobStartEvent(buildID)); err != nil {
		return nil, fmt.Errorf("extending job-start: %w", err)
	}
	disp, err := provenance.SignDispatch(ctx, &provenance.Dispatch{Job: job, AdmissionEvidenceSH: a.evDigest, EnvCert: a.admission.EnvironmentCertificate},
		a.cfg.Collector.Signer(), a.cfg.Collector)
	if err != nil {
		return nil, fmt.Errorf("signing the dispatch attestation: %w", err)
	}
	path := filepath.Join(a.cfg.StateDir, "public", "dispatch.sigstore.json")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := fileio.WriteFileAtomic(path, disp, 0o644); err != nil {
		return nil, err
	}
	d := sha256.Sum256(disp)
	a.job.dispatch = d[:]
	a.job.dispatchBundle = disp
	a.log.Info("job started", "build", buildID, "repository", job.Repository, "sha", job.SHA, "workflow", job.WorkflowRef,
		"event", job.EventName, "actor", job.Actor)
	select {
	case a.jobEvents <- "started":
	default:
	}
	return &JobStartedResponse{BuildID: buildID, Dispatch: path}, nil
}

func (a *Agent) jobCompleted(rep *HookReport) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.job == nil {
		return ErrNoJob
	}
	if a.job.ended {
		return nil
	}
	if got := rep.Job().BuildID(); got != a.job.buildID {
		return fmt.Errorf("completed hook reports build %q, the running build is %q", got, a.job.buildID)
	}
	a.job.ended = true
	if err := a.cfg.Collector.Extend(attest.JobEndEvent(a.job.buildID)); err != nil {
		return err
	}
	a.log.Info("job completed", "build", a.job.buildID)
	select {
	case a.jobEvents <- "completed":
	default:
	}
	return nil
}

// attestFiles hashes the files whose descriptors the job handed over (it
// never opens a path the job names), builds the provenance, signs it with a
// response-time quote and returns the bundle for the client to write as the
// job user: the agent writes nothing into the job's tree.
func (a *Agent) attestFiles(ctx context.Context, req *AttestRequest, files []int) (*AttestResponse, error) {
	if len(req.Subjects) == 0 || len(req.Subjects) > MaxSubjects {
		return nil, fmt.Errorf("need 1 to %d subjects, got %d", MaxSubjects, len(req.Subjects))
	}
	if len(files) != len(req.Subjects) {
		return nil, fmt.Errorf("%w: %d subjects named, %d files handed over", ErrSocketProtocol, len(req.Subjects), len(files))
	}
	seen := map[string]bool{}
	for _, name := range req.Subjects {
		if err := checkSubjectName(name); err != nil {
			return nil, err
		}
		if seen[name] {
			return nil, fmt.Errorf("%w: %q named twice", ErrSubjectName, name)
		}
		seen[name] = true
	}
	a.mu.Lock()
	job := a.job
	var snapshot jobState
	if job != nil {
		snapshot = *job
	}
	adm, cert := a.admission, a.cert
	a.mu.Unlock()
	if job == nil || snapshot.ended {
		return nil, ErrNoJob
	}

	b := &provenance.Build{
		BuilderID: cert.BuilderID, AgentVersion: a.cfg.AgentVersion, Job: snapshot.job,
		Image: provenance.Image{ID: cert.Image.ID}, Labels: adm.Labels, Level: cert.Level, Hardware: cert.Hardware,
		EnvCert: adm.EnvironmentCertificate, DispatchDigest: snapshot.dispatch, Dispatch: snapshot.dispatchBundle, StartedOn: snapshot.startedAt,
	}
	hctx, cancel := context.WithTimeout(ctx, a.cfg.AttestTimeout)
	defer cancel()
	resp := &AttestResponse{}
	for i, fd := range files {
		name := req.Subjects[i]
		d, _, err := hashSubject(hctx, fd, a.cfg.MaxSubjectSize)
		if err != nil {
			return nil, fmt.Errorf("subject %s: %w", name, err)
		}
		b.Subjects = append(b.Subjects, provenance.Subject{Name: name, SHA256: d})
		resp.Subjects = append(resp.Subjects, AttestSubject{Name: name, SHA256: hex.EncodeToString(d)})
	}
	if !snapshot.actions.Complete {
		b.Missing = append(b.Missing, "actions")
	}
	b.Actions = snapshot.actions.Actions
	if len(snapshot.report.EventPayload) == 0 {
		b.Missing = append(b.Missing, "eventPayload")
	}
	b.FinishedOn = a.cfg.Now().UTC()

	var signed []byte
	var err error
	switch {
	case req.IDToken != "" && adm.Sigstore != nil:
		// Keyless: the certificate must name the job recorded at job
		// start, or nothing is signed (SignKeyless checks).
		k := &provenance.Keyless{
			FulcioURL: adm.Sigstore.FulcioURL, RekorURL: adm.Sigstore.RekorURL, ExpectedIssuer: adm.Sigstore.OIDCIssuer,
			IDToken: req.IDToken, Transport: a.cfg.SigstoreTransport,
		}
		signed, err = provenance.SignKeyless(ctx, b, a.cfg.Collector.Signer(), a.cfg.Collector, k)
		resp.Keyless = true
	case req.IDToken != "":
		resp.Notice = "the gate's policy names no Sigstore instance (policy.sigstore): the bundle is signed by the environment key alone"
		fallthrough
	default:
		signed, err = provenance.Sign(ctx, b, a.cfg.Collector.Signer(), a.cfg.Collector)
	}
	if err != nil {
		return nil, fmt.Errorf("signing provenance: %w", err)
	}
	resp.Bundle = signed
	a.log.Info("attested", "build", snapshot.buildID, "subjects", len(b.Subjects), "actions", len(b.Actions), "keyless", resp.Keyless)
	return resp, nil
}
