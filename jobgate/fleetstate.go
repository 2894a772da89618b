package jobgate

import (
	"errors"
	"time"
)

// The fleet's state lives in the same Store as admissions, so that any
// gate replica can reconcile it (jobgate/fleet).

// VMState is where a launched VM is in its life.
type VMState string

// VM states, in the only order they move (a VM may skip to destroyed).
const (
	// VMLaunching: launched, not yet admitted.
	VMLaunching VMState = "launching"
	// VMAdmitted: its agent was admitted; the runner waits for a job.
	VMAdmitted VMState = "admitted"
	// VMBusy: its runner took a job.
	VMBusy VMState = "busy"
	// VMDone: its agent deregistered (teardown); the VM powers off.
	VMDone VMState = "done"
	// VMDestroyed: the provider no longer runs it.
	VMDestroyed VMState = "destroyed"
)

var vmStateOrder = map[VMState]int{VMLaunching: 0, VMAdmitted: 1, VMBusy: 2, VMDone: 3, VMDestroyed: 4}

// Forward reports whether a VM may move from s to next.
func (s VMState) Forward(next VMState) bool {
	a, okA := vmStateOrder[s]
	b, okB := vmStateOrder[next]
	return okA && okB && b >= a
}

// VM is one VM the fleet launched.
type VM struct {
	// Name is unique, and what the VM's agent reports (AdmitRequest.VMID).
	Name     string  `json:"name"`
	Pool     string  `json:"pool"`
	Provider string  `json:"provider"`
	State    VMState `json:"state"`
	// AK is the attestation key the provider enrolled for the VM's TPM
	// (a local fleet creates the TPM, so it knows the AK before the VM
	// boots); empty when the AK is trusted another way.
	AK []byte `json:"ak,omitempty"`
	// ImageID is the verified image it booted.
	ImageID string `json:"imageId"`
	// RunnerName is set at admission.
	RunnerName string `json:"runnerName,omitempty"`
	// JobID is the workflow job its runner took.
	JobID int64 `json:"jobId,omitempty"`
	// Reason says why it was destroyed (or why it is done).
	Reason     string    `json:"reason,omitempty"`
	LaunchedAt time.Time `json:"launchedAt"`
	AdmittedAt time.Time `json:"admittedAt,omitzero"`
	BusyAt     time.Time `json:"busyAt,omitzero"`
	EndedAt    time.Time `json:"endedAt,omitzero"`
	UpdatedAt  time.Time `json:"updatedAt"`
}

// JobState is a workflow job's state as its webhooks said.
type JobState string

// Workflow job states (the workflow_job webhook's actions).
const (
	JobQueued     JobState = "queued"
	JobInProgress JobState = "in_progress"
	JobCompleted  JobState = "completed"
	// JobAbandoned is the fleet's own: a queued job that a matching VM
	// waited for in vain for a whole idle TTL (GitHub gave it elsewhere,
	// or it never existed) no longer creates demand. A later in_progress
	// or completed still applies.
	JobAbandoned JobState = "abandoned"
)

var jobStateOrder = map[JobState]int{JobQueued: 0, JobAbandoned: 1, JobInProgress: 2, JobCompleted: 3}

// QueuedJob is a workflow job the fleet knows of: the demand it creates.
type QueuedJob struct {
	ID         int64    `json:"id"`
	RunID      int64    `json:"runId"`
	Repository string   `json:"repository"`
	Labels     []string `json:"labels"`
	// Pool is the pool whose labels match ("" if none does).
	Pool       string    `json:"pool,omitempty"`
	State      JobState  `json:"state"`
	RunnerName string    `json:"runnerName,omitempty"`
	Conclusion string    `json:"conclusion,omitempty"`
	QueuedAt   time.Time `json:"queuedAt"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	UpdatedAt  time.Time `json:"updatedAt"`
}

// Fleet store errors.
var (
	ErrNoVM          = errors.New("no such VM")
	ErrStateBackward = errors.New("state may only move forward")
	ErrLeaseHeld     = errors.New("the lease is held by another replica")
)
