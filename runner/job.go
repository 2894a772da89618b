package runner

import (
	"fmt"
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
