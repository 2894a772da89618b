package fakegithub

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Job is a queued workflow job, as the fake hands it to a runner. Its fields
// become the runner's GITHUB_* variables (see the fake listener).
type Job struct {
	// Repository is "owner/name".
	Repository   string `json:"repository"`
	RepositoryID int64  `json:"repository_id"`
	// Ref is the full ref, e.g. "refs/heads/main".
	Ref string `json:"ref"`
	SHA string `json:"sha"`
	// Workflow is the workflow's name (GITHUB_WORKFLOW); empty means its
	// path, as GitHub does for an unnamed workflow.
	Workflow string `json:"workflow,omitempty"`
	// WorkflowRef is "owner/name/.github/workflows/x.yml@ref".
	WorkflowRef string `json:"workflow_ref"`
	WorkflowSHA string `json:"workflow_sha"`
	EventName   string `json:"event_name"`
	Actor       string `json:"actor"`
	RunID       int64  `json:"run_id"`
	RunAttempt  int    `json:"run_attempt"`
	RunNumber   int    `json:"run_number"`
	// Job is the job's key in the workflow (GITHUB_JOB).
	Job string `json:"job"`
	// Labels are the job's runs-on labels: a runner takes the job only if it
	// has all of them (compared case-insensitively, as GitHub does).
	Labels []string `json:"labels"`
	// Actions are the repository actions the job uses; the listener logs
	// their download the way the real runner does.
	Actions []ActionRef `json:"actions,omitempty"`
	Steps   []Step      `json:"steps"`
	// EventPayload is written to GITHUB_EVENT_PATH; empty means {}.
	EventPayload json.RawMessage `json:"event_payload,omitempty"`
	// Token is the job's GITHUB_TOKEN (${{ github.token }}), from
	// Server.JobToken; empty means the job has none.
	Token string `json:"token,omitempty"`
}

// ActionRef is an action as the runner resolves it before the job starts.
type ActionRef struct {
	// Repository is "owner/repo" (the runner's NameWithOwner: a path inside
	// the repository is not part of it).
	Repository string `json:"repository"`
	// Ref is what the workflow wrote after '@'.
	Ref string `json:"ref"`
	// SHA is the commit the ref resolved to.
	SHA string `json:"sha"`
	// Package, when set, makes the action an immutable action package:
	// the runner downloads the package, not the repository's tarball, and
	// logs it differently (ActionDownloadInfo.PackageDetails).
	Package *ActionPackage `json:"package,omitempty"`
}

// ActionPackage is an immutable action package's details as the Actions
// service resolves them (actions/runner ActionDownloadPackageDetails).
type ActionPackage struct {
	// Version is the package version, e.g. "3.28.18".
	Version string `json:"version"`
	// ManifestDigest is the package's OCI manifest digest, "sha256:<hex>".
	ManifestDigest string `json:"manifest_digest"`
}

// Step is one step: either Run (a bash script, as `shell: bash`) or Uses (a
// local composite action directory) with With as its inputs.
type Step struct {
	Name string            `json:"name,omitempty"`
	Run  string            `json:"run,omitempty"`
	Uses string            `json:"uses,omitempty"`
	With map[string]string `json:"with,omitempty"`
}

// Job results a runner reports.
const (
	ResultSucceeded = "succeeded"
	ResultFailed    = "failed"
	ResultCancelled = "cancelled"
)

// JobRecord is what the fake knows about a queued job.
type JobRecord struct {
	Job Job
	// RunnerID and RunnerName identify the runner that took the job (zero
	// while queued).
	RunnerID   int64
	RunnerName string
	QueuedAt   time.Time
	AcquiredAt time.Time
	// CompletedAt is zero until the runner reports a result or the job's
	// lease runs out.
	CompletedAt time.Time
	// Result is "" while queued or running, then one of ResultSucceeded,
	// ResultFailed, ResultCancelled.
	Result string
	// Reason says why the fake (not the runner) ended the job, e.g. a lost
	// lease or a deleted runner.
	Reason string
}

// ErrInvalidJob marks a Job that QueueJob refuses.
var ErrInvalidJob = errors.New("invalid job")

// validate checks a job and fills defaults.
func (j *Job) validate() error {
	owner, name, ok := strings.Cut(j.Repository, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("%w: repository %q is not owner/name", ErrInvalidJob, j.Repository)
	}
	if j.RunID <= 0 {
		return fmt.Errorf("%w: run id must be positive", ErrInvalidJob)
	}
	if !isHexSHA(j.SHA) {
		return fmt.Errorf("%w: sha %q is not 40 hex digits", ErrInvalidJob, j.SHA)
	}
	if j.WorkflowSHA != "" && !isHexSHA(j.WorkflowSHA) {
		return fmt.Errorf("%w: workflow sha %q is not 40 hex digits", ErrInvalidJob, j.WorkflowSHA)
	}
	if !strings.HasPrefix(j.Ref, "refs/") {
		return fmt.Errorf("%w: ref %q is not a full ref", ErrInvalidJob, j.Ref)
	}
	if j.Job == "" {
		return fmt.Errorf("%w: job key empty", ErrInvalidJob)
	}
	if len(j.Labels) == 0 {
		return fmt.Errorf("%w: no labels: a job always has runs-on labels", ErrInvalidJob)
	}
	for _, a := range j.Actions {
		owner, repo, _ := strings.Cut(a.Repository, "/")
		if owner == "" || repo == "" || strings.Contains(repo, "/") || a.Ref == "" || strings.ContainsAny(a.Ref, "\n\r") || !isHexSHA(a.SHA) {
			return fmt.Errorf("%w: action %q@%q (SHA %q) is not owner/repo@ref with a 40-hex SHA", ErrInvalidJob, a.Repository, a.Ref, a.SHA)
		}
		if p := a.Package; p != nil {
			d, ok := strings.CutPrefix(p.ManifestDigest, "sha256:")
			if _, err := hex.DecodeString(d); p.Version == "" || strings.ContainsAny(p.Version, "\n\r") || !ok || len(d) != 64 || err != nil {
				return fmt.Errorf("%w: action %s package needs a version and a sha256: manifest digest", ErrInvalidJob, a.Repository)
			}
		}
	}
	if len(j.Steps) == 0 {
		return fmt.Errorf("%w: no steps", ErrInvalidJob)
	}
	for i, s := range j.Steps {
		if (s.Run == "") == (s.Uses == "") {
			return fmt.Errorf("%w: step %d must have exactly one of run and uses", ErrInvalidJob, i)
		}
		if s.Run != "" && len(s.With) > 0 {
			return fmt.Errorf("%w: step %d: with is only for uses", ErrInvalidJob, i)
		}
	}
	if len(j.EventPayload) > 0 && !json.Valid(j.EventPayload) {
		return fmt.Errorf("%w: event payload is not JSON", ErrInvalidJob)
	}
	if j.RunAttempt == 0 {
		j.RunAttempt = 1
	}
	if j.RunNumber == 0 {
		j.RunNumber = 1
	}
	if j.EventName == "" {
		j.EventName = "push"
	}
	if len(j.EventPayload) == 0 {
		j.EventPayload = json.RawMessage(`{}`)
	}
	return nil
}

func isHexSHA(s string) bool {
	if len(s) != 40 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// labelsMatch: every required label is among the runner's labels.
func labelsMatch(required, have []string) bool {
	for _, r := range required {
		found := false
		for _, h := range have {
			if strings.EqualFold(r, h) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
