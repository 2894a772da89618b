package runner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/fileio"
	"github.com/attested-runner/attested-runner/provenance"
)

// Socket errors the job and its hooks see.
var (
	ErrJobAlreadyStarted = errors.New("this runner is single use: a job was already dispatched to it")
	ErrNoJob             = errors.New("no job is running on this runner")
	ErrOutsideWorkspace  = errors.New("path is outside the job workspace")
)

func (a *Agent) socketHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+SocketPathJobStarted, func(w http.ResponseWriter, r *http.Request) {
		var rep HookReport
		if err := readSocketJSON(w, r, maxHookReport, &rep); err != nil {
			writeSocketError(w, http.StatusBadRequest, err)
			return
		}
		resp, err := a.jobStarted(r.Context(), &rep)
		if err != nil {
			a.log.Warn("job start refused", "err", err)
			writeSocketError(w, http.StatusConflict, err)
			return
		}
		writeSocketJSON(w, resp)
	})
	mux.HandleFunc("POST "+SocketPathJobCompleted, func(w http.ResponseWriter, r *http.Request) {
		var rep HookReport
		if err := readSocketJSON(w, r, maxHookReport, &rep); err != nil {
			writeSocketError(w, http.StatusBadRequest, err)
			return
		}
		if err := a.jobCompleted(&rep); err != nil {
			writeSocketError(w, http.StatusConflict, err)
			return
		}
		writeSocketJSON(w, struct{}{})
	})
	mux.HandleFunc("POST "+SocketPathAttest, func(w http.ResponseWriter, r *http.Request) {
		var req AttestRequest
		if err := readSocketJSON(w, r, 1<<20, &req); err != nil {
			writeSocketError(w, http.StatusBadRequest, err)
			return
		}
		resp, err := a.attestFiles(r.Context(), &req)
		if err != nil {
			a.log.Warn("attest refused", "err", err)
			writeSocketError(w, http.StatusBadRequest, err)
			return
		}
		writeSocketJSON(w, resp)
	})
	return mux
}

func writeSocketJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
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
	ws := rep.Env["GITHUB_WORKSPACE"]
	if !filepath.IsAbs(ws) {
		return nil, fmt.Errorf("GITHUB_WORKSPACE %q is not an absolute path", ws)
	}
	buildID := job.BuildID()
	// Taken before anything can fail half-way: a refused second start
	// must hold even if this one fails below.
	a.job = &jobState{report: rep, job: job, buildID: buildID, startedAt: a.cfg.Now().UTC(), workspace: ws}
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

// maxSubjects bounds one attest request.
const maxSubjects = 1024

// attestFiles hashes the job's files itself (the job only names them),
// builds the provenance and signs it with a response-time quote. Paths are
// resolved inside the job workspace through os.Root: "..", absolute paths
// elsewhere and symlinks leading out are refused.
func (a *Agent) attestFiles(ctx context.Context, req *AttestRequest) (*AttestResponse, error) {
	if len(req.Subjects) == 0 || len(req.Subjects) > maxSubjects {
		return nil, fmt.Errorf("need 1 to %d subjects, got %d", maxSubjects, len(req.Subjects))
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
	root, err := os.OpenRoot(snapshot.workspace)
	if err != nil {
		return nil, fmt.Errorf("job workspace: %w", err)
	}
	defer root.Close()

	b := &provenance.Build{
		BuilderID: cert.BuilderID, AgentVersion: a.cfg.AgentVersion, Job: snapshot.job,
		Image: provenance.Image{ID: cert.Image.ID}, Labels: adm.Labels, Level: cert.Level,
		EnvCert: adm.EnvironmentCertificate, DispatchDigest: snapshot.dispatch, StartedOn: snapshot.startedAt,
	}
	resp := &AttestResponse{}
	for _, p := range req.Subjects {
		rel, err := workspaceRel(snapshot.workspace, p)
		if err != nil {
			return nil, err
		}
		f, err := root.Open(rel)
		if err != nil {
			return nil, fmt.Errorf("subject %s: %w", p, err)
		}
		d, err := provenance.DigestOpenFile(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("subject %s: %w", p, err)
		}
		b.Subjects = append(b.Subjects, provenance.Subject{Name: filepath.ToSlash(rel), SHA256: d})
		resp.Subjects = append(resp.Subjects, AttestSubject{Path: rel, SHA256: hex.EncodeToString(d)})
	}
	if !snapshot.actions.Complete {
		b.Missing = append(b.Missing, "actions")
	}
	b.Actions = snapshot.actions.Actions
	if len(snapshot.report.EventPayload) == 0 {
		b.Missing = append(b.Missing, "eventPayload")
	}
	b.FinishedOn = a.cfg.Now().UTC()

	bundlePath := req.Bundle
	if bundlePath == "" {
		bundlePath = req.Subjects[0] + ".sigstore.json"
	}
	bundleRel, err := workspaceRel(snapshot.workspace, bundlePath)
	if err != nil {
		return nil, err
	}
	signed, err := provenance.Sign(ctx, b, a.cfg.Collector.Signer(), a.cfg.Collector)
	if err != nil {
		return nil, fmt.Errorf("signing provenance: %w", err)
	}
	if err := writeInRoot(root, bundleRel, signed, a.cfg.RunnerUID, a.cfg.RunnerGID); err != nil {
		return nil, fmt.Errorf("writing the bundle: %w", err)
	}
	resp.Bundle = bundleRel
	a.log.Info("attested", "build", snapshot.buildID, "subjects", len(b.Subjects), "bundle", bundleRel, "actions", len(b.Actions))
	return resp, nil
}

// workspaceRel turns a subject path (relative to the workspace, or absolute
// inside it) into a clean workspace-relative path.
func workspaceRel(workspace, p string) (string, error) {
	if p == "" || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("empty or invalid path %q", p)
	}
	if filepath.IsAbs(p) {
		rel, err := filepath.Rel(workspace, p)
		if err != nil {
			return "", fmt.Errorf("%w: %s", ErrOutsideWorkspace, p)
		}
		p = rel
	}
	p = filepath.Clean(p)
	if p == ".." || strings.HasPrefix(p, "../") || filepath.IsAbs(p) {
		return "", fmt.Errorf("%w: %s", ErrOutsideWorkspace, p)
	}
	return p, nil
}

// writeInRoot writes a file inside root atomically, owned by the job user.
func writeInRoot(root *os.Root, rel string, data []byte, uid, gid int) error {
	tmp := fmt.Sprintf("%s.tmp-%d", rel, time.Now().UnixNano())
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		root.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		root.Remove(tmp)
		return err
	}
	if err := root.Lchown(tmp, uid, gid); err != nil {
		root.Remove(tmp)
		return err
	}
	if err := root.Rename(tmp, rel); err != nil {
		root.Remove(tmp)
		return err
	}
	return nil
}
