package jobgate

import (
	"context"
	"errors"
	"time"
)

// RunnerState is where an admitted environment's runner is in its life.
type RunnerState string

// Runner states.
const (
	// StatePending: the key is reserved, the JIT runner is being minted.
	StatePending RunnerState = "pending"
	// StateLive: admitted; the runner exists on GitHub.
	StateLive RunnerState = "live"
	// StateDeregistered: the agent deregistered (teardown).
	StateDeregistered RunnerState = "deregistered"
	// StateRemoved: the gate removed the runner (reconcile: unclaimed past
	// TTL, VM vanished).
	StateRemoved RunnerState = "removed"
)

var runnerStateOrder = map[RunnerState]int{StatePending: 0, StateLive: 1, StateDeregistered: 2, StateRemoved: 2}

// Forward reports whether a runner may move from s to next: pending, live,
// then deregistered or removed. The two ends share a rank: whichever of
// the agent's teardown and the gate's reconcile comes second may still say
// so; nothing ever makes an ended runner live or pending again.
func (s RunnerState) Forward(next RunnerState) bool {
	a, okA := runnerStateOrder[s]
	b, okB := runnerStateOrder[next]
	return okA && okB && b >= a
}

// Runner is what the gate remembers of an admitted environment. The key
// digest is never forgotten: a key is admitted at most once, ever.
type Runner struct {
	Name           string   `json:"name"`
	ID             int64    `json:"id,omitempty"`
	KeyDigest      string   `json:"keyDigest"`
	EnvKey         []byte   `json:"envKey"`
	Labels         []string `json:"labels"`
	EvidenceDigest string   `json:"evidenceDigest"`
	// VMID is the fleet VM the agent runs in (AdmitRequest.VMID), if any.
	VMID       string      `json:"vmId,omitempty"`
	State      RunnerState `json:"state"`
	AdmittedAt time.Time   `json:"admittedAt"`
	ExpiresAt  time.Time   `json:"expiresAt"`
	UpdatedAt  time.Time   `json:"updatedAt"`
}

// Store errors.
var (
	ErrNonceUnknown = errors.New("nonce unknown")
	ErrNonceExpired = errors.New("nonce expired")
	ErrNonceUsed    = errors.New("nonce already used")
	ErrKeyAdmitted  = errors.New("environment key already admitted")
	ErrNoRunner     = errors.New("no such runner")
)

// Store is the gate's durable state: nonces, admitted keys and runners, and
// the hash-chained audit log. Operations that must be atomic are single
// methods. The embedded implementation is bbolt (OpenBoltStore); the
// replicated gate's is PostgreSQL (OpenPostgresStore), one transaction per
// method with the rules enforced by the database. One contract test suite
// (store_test.go) runs against both.
type Store interface {
	// NewNonce issues a fresh nonce valid until expires. Nonces are
	// stateless until used (see nonce.go): issuing one writes nothing, so
	// an unauthenticated challenge flood cannot grow the store.
	NewNonce(ctx context.Context, expires time.Time) ([]byte, error)
	// CheckNonce reports whether nonce could be consumed now, without
	// consuming it (to refuse replays before spending CPU on evidence).
	CheckNonce(ctx context.Context, nonce []byte, now time.Time) error
	// Reserve consumes nonce and reserves r.KeyDigest (state pending) in one
	// transaction; ErrNonce* or ErrKeyAdmitted if either is not possible.
	// The audit record, if any, is appended in the same transaction.
	Reserve(ctx context.Context, nonce []byte, now time.Time, r *Runner, audit *AuditRecord) error
	// Release drops a pending reservation (the mint failed); a runner that
	// is not pending is never dropped (ErrStateBackward).
	Release(ctx context.Context, keyDigest string, audit *AuditRecord) error
	// Activate turns a pending reservation into a live runner
	// (ErrStateBackward if it is not pending).
	Activate(ctx context.Context, r *Runner, audit *AuditRecord) error
	// SetState records a runner's new state; states only move forward
	// (RunnerState.Forward, else ErrStateBackward).
	SetState(ctx context.Context, name string, state RunnerState, now time.Time, audit *AuditRecord) error
	// Runner returns a runner by name (ErrNoRunner).
	Runner(ctx context.Context, name string) (*Runner, error)
	// Runners lists every runner record, in name order.
	Runners(ctx context.Context) ([]Runner, error)
	// Audit appends a record on its own.
	Audit(ctx context.Context, rec *AuditRecord) error
	// AuditLog calls fn for each audit record, in order.
	AuditLog(ctx context.Context, fn func(AuditRecord) error) error
	// PruneNonces forgets used nonces that expired before now (an expired
	// nonce is refused by its own expiry).
	PruneNonces(ctx context.Context, now time.Time) (int, error)

	// Fleet state (jobgate/fleet).

	// PutVM creates or updates a VM; its state only moves forward
	// (ErrStateBackward). The audit record, if any, is appended in the same
	// transaction.
	PutVM(ctx context.Context, vm *VM, audit *AuditRecord) error
	// VM returns a VM by name (ErrNoVM).
	VM(ctx context.Context, name string) (*VM, error)
	// VMs lists every VM record, in name order.
	VMs(ctx context.Context) ([]VM, error)
	// PutJob creates or updates a workflow job; its state only moves
	// forward (a late webhook for an older state is ErrStateBackward).
	PutJob(ctx context.Context, j *QueuedJob) error
	// Jobs lists the workflow jobs, in id order.
	Jobs(ctx context.Context) ([]QueuedJob, error)
	// FirstDelivery records a webhook delivery id and reports whether it
	// is the first time (false: a duplicate delivery).
	FirstDelivery(ctx context.Context, id string, now time.Time) (bool, error)
	// DeliverySeen reports whether a delivery id was recorded.
	DeliverySeen(ctx context.Context, id string) (bool, error)
	// Lease takes or renews the named lease for holder until `until`;
	// ErrLeaseHeld while another holder's lease has not expired at now.
	Lease(ctx context.Context, name, holder string, now, until time.Time) error
	// PruneFleet forgets completed jobs, destroyed VMs and delivery ids
	// last changed before `before`.
	PruneFleet(ctx context.Context, before time.Time) (int, error)

	Close() error
}
