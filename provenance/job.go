package provenance

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// Job is the job a runner actually received, as reported by the runner's
// job-started hook (GITHUB_* variables and the event payload). A JIT runner
// takes whatever queued job matches its labels, so this is recorded, never
// assumed. Empty fields are unknown, never guessed.
type Job struct {
	ServerURL    string `json:"serverUrl"`    // GITHUB_SERVER_URL, e.g. https://github.com
	Repository   string `json:"repository"`   // GITHUB_REPOSITORY, owner/name
	RepositoryID string `json:"repositoryId"` // GITHUB_REPOSITORY_ID
	Ref          string `json:"ref"`          // GITHUB_REF, refs/heads/main
	SHA          string `json:"sha"`          // GITHUB_SHA, the commit built
	WorkflowRef  string `json:"workflowRef"`  // GITHUB_WORKFLOW_REF, owner/name/.github/workflows/x.yml@ref
	WorkflowSHA  string `json:"workflowSha"`  // GITHUB_WORKFLOW_SHA
	EventName    string `json:"eventName"`    // GITHUB_EVENT_NAME
	Actor        string `json:"actor"`        // GITHUB_ACTOR
	RunID        string `json:"runId"`        // GITHUB_RUN_ID
	RunAttempt   string `json:"runAttempt"`   // GITHUB_RUN_ATTEMPT
	Job          string `json:"job"`          // GITHUB_JOB, the job's key in the workflow
	RunnerName   string `json:"runnerName"`   // RUNNER_NAME
}

// Validate checks the fields a build id and provenance depend on.
func (j Job) Validate() error {
	var missing []string
	for name, v := range map[string]string{
		"serverUrl": j.ServerURL, "repository": j.Repository, "ref": j.Ref, "sha": j.SHA,
		"workflowRef": j.WorkflowRef, "runId": j.RunID, "runAttempt": j.RunAttempt,
		"job": j.Job, "runnerName": j.RunnerName,
	} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("job record lacks %s", strings.Join(missing, ", "))
	}
	if strings.Count(j.Repository, "/") != 1 {
		return fmt.Errorf("repository %q is not owner/name", j.Repository)
	}
	if !strings.HasPrefix(j.ServerURL, "https://") && !strings.HasPrefix(j.ServerURL, "http://") {
		return fmt.Errorf("server URL %q is not http(s)", j.ServerURL)
	}
	return nil
}

// InvocationURL is the run attempt's page: the provenance invocation id.
func (j Job) InvocationURL() string {
	return fmt.Sprintf("%s/%s/actions/runs/%s/attempts/%s", strings.TrimSuffix(j.ServerURL, "/"), j.Repository, j.RunID, j.RunAttempt)
}

// BuildID names this job uniquely and binds its whole description. It is
// what the lifecycle log's job-start event records before any job code runs
// (BuildEnv L2.agent-dispatch), so it must fix everything the provenance
// says about the job: otherwise code that later gained root in the VM could
// sign provenance for another ref or commit of the same run. The readable
// part names the run attempt, the job key and the single-use runner (matrix
// jobs share a key, never a runner); the digest covers every field,
// length-prefixed in declaration order.
func (j Job) BuildID() string {
	h := sha256.New()
	for _, f := range []string{j.ServerURL, j.Repository, j.RepositoryID, j.Ref, j.SHA, j.WorkflowRef, j.WorkflowSHA,
		j.EventName, j.Actor, j.RunID, j.RunAttempt, j.Job, j.RunnerName} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		h.Write(n[:])
		h.Write([]byte(f))
	}
	return j.InvocationURL() + "#" + j.Job + "@" + j.RunnerName + "/sha256:" + hex.EncodeToString(h.Sum(nil))
}

// WorkflowPath is the workflow file's path in its repository.
func (j Job) WorkflowPath() string {
	p := strings.TrimPrefix(j.WorkflowRef, j.Repository+"/")
	if i := strings.LastIndex(p, "@"); i >= 0 {
		p = p[:i]
	}
	return p
}

// ActionRef is an action a job used, with the commit its ref resolved to,
// read from the runner's _diag/Worker_*.log.
type ActionRef struct {
	Repository string `json:"repository"` // owner/name
	Ref        string `json:"ref"`        // what the workflow asked for: v4, main, a SHA
	SHA        string `json:"sha"`        // what it resolved to
	// Package is set when the runner downloaded an immutable action package
	// instead of the repository's tarball; SHA is then the source commit the
	// package names.
	Package *ActionPackage `json:"package,omitempty"`
}

// ActionPackage is an immutable action package as the runner logs it
// (actions/runner ActionManager.DownloadRepositoryActionAsync).
type ActionPackage struct {
	Version        string `json:"version"`        // e.g. 3.28.18
	ManifestDigest string `json:"manifestDigest"` // sha256:<64 hex>, of the package's OCI manifest
}
