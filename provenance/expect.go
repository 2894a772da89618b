package provenance

import (
	"fmt"
	"net/url"
	"strings"
)

// This file holds the expectation forms shared with gh and slsa-verifier:
// an owner instead of a repository, a server (gh's --hostname), and
// workflows written as a path, as owner/repo/path or host/owner/repo/path,
// with or without @ref.

// WorkflowExpectation is a parsed ExpectedWorkflow.
type WorkflowExpectation struct {
	// Host, when set, must be the recorded server's host.
	Host string
	// Repository (owner/name), when set, must be the workflow's repository.
	Repository string
	// Path is the workflow file in its repository (.github/workflows/x.yml).
	Path string
	// Ref, when set, must be the ref the workflow ran from.
	Ref string
}

// workflowDir is where GitHub keeps workflow files: it separates a
// workflow path from the [host/]owner/repo in front of it.
const workflowDir = ".github/workflows/"

// ParseWorkflowExpectation reads the forms --workflow / --signer-workflow
// accept: .github/workflows/x.yml, owner/repo/.github/workflows/x.yml,
// host/owner/repo/.github/workflows/x.yml (also with https://), each
// optionally followed by @ref.
func ParseWorkflowExpectation(s string) (*WorkflowExpectation, error) {
	w := &WorkflowExpectation{}
	rest := strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "./")
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest, w.Ref = rest[:i], rest[i+1:]
		if w.Ref == "" {
			return nil, fmt.Errorf("%w: workflow %q: empty ref after @", ErrNoExpectation, s)
		}
	}
	if !strings.HasPrefix(rest, workflowDir) {
		i := strings.Index(rest, "/"+workflowDir)
		if i < 0 {
			return nil, fmt.Errorf("%w: workflow %q is not [[host/]owner/repo/].github/workflows/FILE[@ref]", ErrNoExpectation, s)
		}
		parts := strings.Split(rest[:i], "/")
		if len(parts) == 3 && parts[0] != "" {
			w.Host, parts = parts[0], parts[1:]
		}
		if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
			return nil, fmt.Errorf("%w: workflow %q: want owner/repo or host/owner/repo before %s", ErrNoExpectation, s, workflowDir)
		}
		w.Repository = parts[0] + "/" + parts[1]
		rest = rest[i+1:]
	}
	if len(rest) <= len(workflowDir) || strings.Contains(rest, "..") {
		return nil, fmt.Errorf("%w: workflow %q names no workflow file", ErrNoExpectation, s)
	}
	w.Path = rest
	return w, nil
}

// match reports whether the recorded job ran this workflow. Owner and
// repository names compare case-insensitively, as GitHub treats them; the
// path and the ref exactly.
func (w *WorkflowExpectation) match(j Job) bool {
	recRepo, recPath, recRef := j.workflowParts()
	if w.Host != "" && !strings.EqualFold(w.Host, serverHost(j.ServerURL)) {
		return false
	}
	if w.Repository != "" && !strings.EqualFold(w.Repository, recRepo) {
		return false
	}
	if w.Ref != "" && w.Ref != recRef {
		return false
	}
	return w.Path == recPath
}

// workflowParts splits GITHUB_WORKFLOW_REF (owner/repo/path@ref). A
// reusable workflow is not told apart: GITHUB_WORKFLOW_REF names the
// caller's workflow.
func (j Job) workflowParts() (repo, path, ref string) {
	s := j.WorkflowRef
	if i := strings.LastIndex(s, "@"); i >= 0 {
		s, ref = s[:i], s[i+1:]
	}
	if i := strings.Index(s, "/"+workflowDir); i >= 0 {
		return s[:i], s[i+1:], ref
	}
	return "", s, ref
}

// ServerURLFor is the server URL a --hostname value names: a bare host
// (github.com, ghe.example.com:8443) means https; a value with a scheme is
// taken as written.
func ServerURLFor(hostname string) string {
	if strings.Contains(hostname, "://") {
		return strings.TrimSuffix(hostname, "/")
	}
	return "https://" + strings.TrimSuffix(hostname, "/")
}

func serverHost(serverURL string) string {
	u, err := url.Parse(serverURL)
	if err != nil {
		return ""
	}
	return u.Host
}

func sameServer(recorded, expected string) bool {
	return strings.EqualFold(strings.TrimSuffix(recorded, "/"), strings.TrimSuffix(expected, "/"))
}

func repoOwner(repository string) string {
	owner, _, _ := strings.Cut(repository, "/")
	return owner
}
