package runner

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/attested-runner/attested-runner/provenance"
)

// HookReport is what the job-started hook sends the agent: the runner's
// real job environment (the GITHUB_* and RUNNER_* variables the runner gave
// the hook) and the event payload. It is what the runner actually received:
// a JIT runner takes whichever queued job matches its labels.
type HookReport struct {
	Env          map[string]string `json:"env"`
	EventPayload []byte            `json:"eventPayload,omitempty"`
}

// Limits on what the hook may send.
const (
	maxHookEnvVars  = 256
	maxHookValue    = 4 << 10
	maxEventPayload = 1 << 20
	maxHookReport   = 2 << 20
)

// hookVars are the variables a hook report carries (only these).
var hookVars = []string{
	"GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_REPOSITORY_ID", "GITHUB_REPOSITORY_OWNER",
	"GITHUB_REF", "GITHUB_SHA", "GITHUB_WORKFLOW", "GITHUB_WORKFLOW_REF", "GITHUB_WORKFLOW_SHA",
	"GITHUB_EVENT_NAME", "GITHUB_ACTOR", "GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_RUN_NUMBER",
	"GITHUB_JOB", "GITHUB_WORKSPACE", "RUNNER_NAME", "RUNNER_TEMP",
}

// ReportFromEnv builds a hook report from an environment (the hook's).
func ReportFromEnv(getenv func(string) string) *HookReport {
	r := &HookReport{Env: map[string]string{}}
	for _, k := range hookVars {
		if v := getenv(k); v != "" {
			r.Env[k] = v
		}
	}
	return r
}

func (r *HookReport) validate() error {
	if len(r.Env) > maxHookEnvVars || len(r.EventPayload) > maxEventPayload {
		return fmt.Errorf("hook report over its limits")
	}
	for k, v := range r.Env {
		if len(v) > maxHookValue || strings.ContainsAny(v, "\x00\n") {
			return fmt.Errorf("hook variable %s is over %d bytes or has control characters", k, maxHookValue)
		}
	}
	return nil
}

// Job converts the report into the provenance job record. Missing fields
// stay empty (Job.Validate names them); nothing is guessed.
func (r *HookReport) Job() provenance.Job {
	e := r.Env
	return provenance.Job{
		ServerURL: e["GITHUB_SERVER_URL"], Repository: e["GITHUB_REPOSITORY"], RepositoryID: e["GITHUB_REPOSITORY_ID"],
		Ref: e["GITHUB_REF"], SHA: e["GITHUB_SHA"], WorkflowRef: e["GITHUB_WORKFLOW_REF"], WorkflowSHA: e["GITHUB_WORKFLOW_SHA"],
		EventName: e["GITHUB_EVENT_NAME"], Actor: e["GITHUB_ACTOR"], RunID: e["GITHUB_RUN_ID"],
		RunAttempt: e["GITHUB_RUN_ATTEMPT"], Job: e["GITHUB_JOB"], RunnerName: e["RUNNER_NAME"],
	}
}

// actionLine matches the runner's line for each action it downloads:
// Download action repository 'owner/repo@ref' (SHA:<40 hex>). With
// GITHUB_ACTIONS_RUNNER_TRACE set (the agent sets it) the runner also
// writes it to _diag/Worker_*.log, as
// "[... VERB JobServerQueue] Enqueue web console line queue: Download action
// repository 'actions/checkout@v4' (SHA:...)".
var actionLine = regexp.MustCompile(`Download action repository '([A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-/]+)@([^' ]+)' \(SHA:([0-9a-f]{40})\)`)

// maxDiagRead bounds how much of the runner's diagnostic logs is read.
const maxDiagRead = 16 << 20

// DiagSnapshot is the size of each Worker log at the moment a job started.
// The runner downloads a job's actions during "Set up job", before the
// job-started hook; everything written after the hook can be the job's own
// output (which goes to the same stream and could imitate a download line),
// so only bytes before the snapshot are trusted.
type DiagSnapshot map[string]int64

// SnapshotDiag records the current size of every _diag/Worker_*.log.
func SnapshotDiag(diagDir string) (DiagSnapshot, error) {
	logs, err := filepath.Glob(filepath.Join(diagDir, "Worker_*.log"))
	if err != nil {
		return nil, err
	}
	snap := DiagSnapshot{}
	for _, p := range logs {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		snap[p] = fi.Size()
	}
	return snap, nil
}

// ActionsFromDiag reads the snapshotted prefix of the runner's Worker logs
// and returns every action downloaded, with the commit its ref resolved to,
// in order of first appearance. found is false when there was no Worker log
// (the caller marks "actions" missing). Actions a job downloads after it
// started (nested in local composite actions) are not recorded.
func ActionsFromDiag(snap DiagSnapshot) (actions []provenance.ActionRef, found bool, err error) {
	if len(snap) == 0 {
		return nil, false, nil
	}
	paths := make([]string, 0, len(snap))
	for p := range snap {
		paths = append(paths, p)
	}
	sort.Strings(paths) // names carry the timestamp
	seen := map[string]bool{}
	budget := int64(maxDiagRead)
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return nil, true, err
		}
		sc := bufio.NewScanner(&limitedReader{r: io.LimitReader(f, snap[path]), n: &budget})
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if !bytes.Contains(line, []byte("Download action repository")) {
				continue
			}
			m := actionLine.FindSubmatch(line)
			if m == nil {
				continue
			}
			a := provenance.ActionRef{Repository: string(m[1]), Ref: string(m[2]), SHA: string(m[3])}
			key := a.Repository + "@" + a.Ref + "#" + a.SHA
			if !seen[key] {
				seen[key] = true
				actions = append(actions, a)
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return actions, true, fmt.Errorf("reading %s: %w", path, err)
		}
	}
	return actions, true, nil
}

type limitedReader struct {
	r interface{ Read([]byte) (int, error) }
	n *int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if *l.n <= 0 {
		return 0, fmt.Errorf("runner diagnostic logs exceed %d bytes", maxDiagRead)
	}
	if int64(len(p)) > *l.n {
		p = p[:*l.n]
	}
	n, err := l.r.Read(p)
	*l.n -= int64(n)
	return n, err
}
