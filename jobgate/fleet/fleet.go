package fleet

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/jobgate"
)

// Fleet runs the pools of one gate.
type Fleet struct {
	gate     *jobgate.Gate
	store    jobgate.Store
	cfg      *Config
	pools    []*pool
	secret   []byte
	signers  []crypto.PublicKey
	log      *slog.Logger
	now      func() time.Time
	holder   string
	metrics  *metrics
	kick     chan struct{}
	recovery DeliverySource
	budget   BudgetSource
	requests func() (installation, app int64)
	// lastRecovery: when the delivery log was last read (Reconcile only).
	lastRecovery time.Time

	mu      sync.Mutex
	seenIDs map[string]bool // delivery ids processed (the store has them too)
	// busyUntil: runners GitHub would not remove because they still run a
	// job (their VM is gone), by name: not asked again before this time,
	// or before the job's completed webhook, whichever comes first.
	busyUntil map[string]time.Time
}

type pool struct {
	cfg      *PoolConfig
	provider Provider
	bucket   tokenBucket
	// ekTrust, if set, is what the pool's VMs' EK certificates must chain
	// to; their AKs are then trusted only through credential activation.
	ekTrust *attest.EKTrust
}

// Options assemble a Fleet.
type Options struct {
	Config *Config
	Gate   *jobgate.Gate
	// WebhookSecret is the App's webhook secret (the file's content).
	WebhookSecret []byte
	// ImageSigners are the gate's policy.imageSigners: pool images must be
	// signed by one of them.
	ImageSigners []crypto.PublicKey
	// Providers by pool name.
	Providers map[string]Provider
	// Deliveries, if set, recovers webhook deliveries the gate missed.
	Deliveries DeliverySource
	// Budget, if set, reports the installation's GitHub request quota.
	Budget BudgetSource
	// Requests, if set, counts the gate's GitHub requests (for status and
	// metrics).
	Requests func() (installation, app int64)
	Logger   *slog.Logger
	Now      func() time.Time
}

// DeliverySource lists the App's recent webhook deliveries and fetches one
// (jobgate.GitHubRegistry: GET /app/hook/deliveries, GET
// /app/hook/deliveries/{id}).
type DeliverySource interface {
	RecentDeliveries(ctx context.Context, since time.Time) ([]jobgate.WebhookDelivery, error)
	Delivery(ctx context.Context, id int64) (*jobgate.WebhookDelivery, error)
}

// BudgetSource reports the installation's remaining request quota as
// GitHub last stated it (known false before any response).
type BudgetSource interface {
	Budget() (remaining int, reset time.Time, known bool)
}

// New checks the options and builds the fleet.
func New(o Options) (*Fleet, error) {
	switch {
	case o.Config == nil || o.Gate == nil:
		return nil, errors.New("fleet: configuration and gate are required")
	case len(o.WebhookSecret) < 16:
		return nil, errors.New("fleet: the webhook secret must be at least 16 bytes")
	case len(o.ImageSigners) == 0:
		return nil, errors.New("fleet: policy.imageSigners is required: pool images are verified against signed provenance before every launch")
	}
	f := &Fleet{
		gate: o.Gate, store: o.Gate.Store(), cfg: o.Config, secret: o.WebhookSecret, signers: o.ImageSigners,
		log: o.Logger, now: o.Now, metrics: newMetrics(), kick: make(chan struct{}, 1),
		recovery: o.Deliveries, budget: o.Budget, requests: o.Requests,
	}
	if f.log == nil {
		f.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if f.now == nil {
		f.now = time.Now
	}
	var id [8]byte
	rand.Read(id[:])
	f.holder = "gate-" + hex.EncodeToString(id[:])
	for i := range o.Config.Pools {
		pc := &o.Config.Pools[i]
		prov := o.Providers[pc.Name]
		if prov == nil {
			return nil, fmt.Errorf("fleet: pool %s has no provider", pc.Name)
		}
		ekTrust, err := poolEKTrust(pc, prov)
		if err != nil {
			return nil, fmt.Errorf("fleet: pool %s: %w", pc.Name, err)
		}
		f.pools = append(f.pools, &pool{cfg: pc, provider: prov, bucket: newTokenBucket(pc.LaunchesPerMinute, f.now()), ekTrust: ekTrust})
		f.metrics.pool(pc.Name)
	}
	o.Gate.SetFleet(f)
	return f, nil
}

// EKAuthority is a Provider that manufactures its VMs' TPMs with EK
// certificates of its own CA (the qemu provider with an ekCA).
type EKAuthority interface {
	EKRoots() []*x509.Certificate
}

// poolEKTrust is the pool's EK trust: its trustedEKRoots files and its
// provider's own EK CA; nil when it has neither.
func poolEKTrust(pc *PoolConfig, prov Provider) (*attest.EKTrust, error) {
	var roots []*x509.Certificate
	for _, f := range pc.TrustedEKRoots {
		certs, err := attest.LoadCertificates(f)
		if err != nil {
			return nil, fmt.Errorf("trustedEKRoots: %w", err)
		}
		roots = append(roots, certs...)
	}
	if a, ok := prov.(EKAuthority); ok {
		roots = append(roots, a.EKRoots()...)
	}
	if len(roots) == 0 {
		return nil, nil
	}
	return &attest.EKTrust{Roots: roots}, nil
}

func (f *Fleet) pool(name string) *pool {
	for _, p := range f.pools {
		if p.cfg.Name == name {
			return p
		}
	}
	return nil
}

// Kick asks for a scheduling pass soon (a webhook changed demand).
func (f *Fleet) Kick() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// Run schedules and reconciles until ctx ends.
func (f *Fleet) Run(ctx context.Context) error {
	every := f.cfg.ReconcileInterval.Or(30 * time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	f.Reconcile(ctx)
	f.Schedule(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-f.kick:
			f.Schedule(ctx)
		case <-t.C:
			f.Reconcile(ctx)
			f.Schedule(ctx)
		}
	}
}

// leaseFor takes this replica's lease on a pool: only one replica launches
// and reaps a pool's VMs at a time.
func (f *Fleet) leaseFor(ctx context.Context, p *pool) bool {
	now := f.now()
	ttl := 3 * f.cfg.ReconcileInterval.Or(30*time.Second)
	err := f.store.Lease(ctx, "fleet/"+p.cfg.Name, f.holder, now, now.Add(ttl))
	if err != nil && !errors.Is(err, jobgate.ErrLeaseHeld) {
		f.log.Warn("fleet lease", "pool", p.cfg.Name, "err", err)
	}
	return err == nil
}

// Schedule launches the VMs each pool's demand needs: one per queued job
// not yet matched by an idle or launching VM, plus minIdle, at most
// maxTotal alive, at the pool's launch rate and within the GitHub budget.
func (f *Fleet) Schedule(ctx context.Context) {
	jobs, err := f.store.Jobs(ctx)
	if err != nil {
		f.log.Warn("fleet: reading jobs", "err", err)
		return
	}
	vms, err := f.store.VMs(ctx)
	if err != nil {
		f.log.Warn("fleet: reading VMs", "err", err)
		return
	}
	for _, p := range f.pools {
		if !f.leaseFor(ctx, p) {
			continue
		}
		demand := queued(jobs, p.cfg.Name)
		alive, spare := 0, 0
		for _, vm := range vms {
			if vm.Pool != p.cfg.Name {
				continue
			}
			switch vm.State {
			case jobgate.VMLaunching, jobgate.VMAdmitted:
				alive++
				spare++
			case jobgate.VMBusy:
				alive++
			}
		}
		want := demand + p.cfg.MinIdle - spare
		if room := p.cfg.MaxTotal - alive; want > room {
			want = room
		}
		for range max(want, 0) {
			if err := f.launch(ctx, p); err != nil {
				f.log.Warn("fleet: launch", "pool", p.cfg.Name, "err", err)
				break
			}
		}
	}
}

// queued is a pool's demand: its jobs GitHub still has queued.
func queued(jobs []jobgate.QueuedJob, pool string) int {
	n := 0
	for _, j := range jobs {
		if j.Pool == pool && j.State == jobgate.JobQueued {
			n++
		}
	}
	return n
}

// errBudget and errRate stop a scheduling pass without an audit record.
var (
	errRate   = errors.New("launch rate limit reached")
	errBudget = errors.New("the installation's GitHub request quota is below the pool's reserve")
)

// launch verifies the pool's image and starts one VM.
func (f *Fleet) launch(ctx context.Context, p *pool) error {
	now := f.now()
	if f.budget != nil {
		if remaining, reset, known := f.budget.Budget(); known && remaining < p.cfg.ReserveRequests && now.Before(reset) {
			return fmt.Errorf("%w (%d left until %s)", errBudget, remaining, reset.Format(time.RFC3339))
		}
	}
	if !p.bucket.take(now) {
		return errRate
	}
	var id [5]byte
	rand.Read(id[:])
	name := p.cfg.Name + "-" + hex.EncodeToString(id[:])
	boot, err := verifyImage(ctx, p.cfg, name, f.signers, f.gate.ID(), f.gate.Signer(), now)
	if err != nil {
		f.metrics.failedLaunch(p.cfg.Name, "image_refused")
		f.gate.AuditRecord(ctx, &jobgate.AuditRecord{Action: "launch", Result: "rejected", Reason: "image_refused",
			Detail: fmt.Sprintf("pool %s, VM %s not launched: %v", p.cfg.Name, name, err)})
		return err
	}
	vm := &jobgate.VM{Name: name, Pool: p.cfg.Name, Provider: p.provider.Kind(), State: jobgate.VMLaunching,
		ImageID: boot.ImageID, LaunchedAt: now.UTC(), UpdatedAt: now.UTC()}
	// Recorded before the provider starts it: a VM the store does not know
	// is a zombie to the next reconcile, never an orphan.
	if err := f.store.PutVM(ctx, vm, &jobgate.AuditRecord{Time: now.UTC(), Action: "launch", Result: "verified",
		Detail:      fmt.Sprintf("pool %s, VM %s, image %s: provenance and boot files verified", p.cfg.Name, name, boot.ImageID),
		Attestation: boot.VSA}); err != nil {
		return err
	}
	f.metrics.launching(p.cfg.Name, 1)
	launched, err := p.provider.Launch(ctx, &LaunchRequest{Name: name, Pool: p.cfg, Boot: boot})
	f.metrics.launching(p.cfg.Name, -1)
	if err != nil {
		f.metrics.failedLaunch(p.cfg.Name, "provider")
		vm.State, vm.Reason, vm.EndedAt, vm.UpdatedAt = jobgate.VMDestroyed, "launch failed: "+err.Error(), f.now().UTC(), f.now().UTC()
		rctx, cancel := jobgate.RecordContext(ctx)
		defer cancel()
		f.store.PutVM(rctx, vm, &jobgate.AuditRecord{Time: f.now().UTC(), Action: "launch", Result: "failed", Reason: "provider", Detail: fmt.Sprintf("VM %s: %v", name, err)})
		p.provider.Destroy(context.WithoutCancel(ctx), name)
		return err
	}
	if launched != nil && launched.AK != nil {
		if vm.AK, err = marshalKey(launched.AK); err != nil {
			return err
		}
		vm.UpdatedAt = f.now().UTC()
		rctx, cancel := jobgate.RecordContext(ctx)
		defer cancel()
		if err := f.store.PutVM(rctx, vm, nil); err != nil {
			return err
		}
	}
	f.log.Info("fleet: launched", "pool", p.cfg.Name, "vm", name, "image", boot.ImageID, "provider", p.provider.Kind())
	return nil
}

// Admission implements jobgate.FleetHooks: an agent naming a VM of this
// fleet is admitted only while that VM is launching, only once, with the
// AK the provider enrolled for it and the labels of its pool.
func (f *Fleet) Admission(ctx context.Context, vmID string) (*jobgate.AdmissionTerms, error) {
	if vmID == "" {
		return nil, nil // not a fleet VM: the gate's own policy applies
	}
	vm, err := f.store.VM(ctx, vmID)
	if err != nil {
		return nil, fmt.Errorf("VM %q: %w", vmID, err)
	}
	if vm.State != jobgate.VMLaunching {
		return nil, fmt.Errorf("VM %s is %s: a VM is admitted once, while it is launching", vm.Name, vm.State)
	}
	p := f.pool(vm.Pool)
	if p == nil {
		return nil, fmt.Errorf("VM %s belongs to pool %s, which this gate no longer has", vm.Name, vm.Pool)
	}
	t := &jobgate.AdmissionTerms{Labels: slices.Clone(p.cfg.Labels), WorkFolder: p.cfg.WorkFolder, ImageID: vm.ImageID}
	if p.ekTrust != nil {
		// The pool's EK roots, and only them: the VM proves its AK by
		// credential activation.
		t.TrustedEKs, t.RequireActivation = p.ekTrust, true
	}
	if len(vm.AK) > 0 {
		if t.TrustedAK, err = parseKey(vm.AK); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// Admitted implements jobgate.FleetHooks.
func (f *Fleet) Admitted(ctx context.Context, vmID string, r *jobgate.Runner) {
	if vmID == "" {
		return
	}
	vm, err := f.store.VM(ctx, vmID)
	if err != nil {
		return
	}
	now := f.now().UTC()
	vm.State, vm.RunnerName, vm.AdmittedAt, vm.UpdatedAt = jobgate.VMAdmitted, r.Name, now, now
	if err := f.store.PutVM(ctx, vm, nil); err != nil {
		f.log.Warn("fleet: recording admission", "vm", vmID, "err", err)
		return
	}
	f.metrics.launchToAdmitted(vm.Pool, now.Sub(vm.LaunchedAt))
	f.log.Info("fleet: VM admitted", "vm", vmID, "runner", r.Name, "after", now.Sub(vm.LaunchedAt).Round(time.Millisecond))
}

// Deregistered implements jobgate.FleetHooks: the VM's agent tore down;
// the VM powers itself off, and reconcile deletes what is left.
func (f *Fleet) Deregistered(ctx context.Context, r *jobgate.Runner, outcome string) {
	if r.VMID == "" {
		return
	}
	vm, err := f.store.VM(ctx, r.VMID)
	if err != nil || vm.State == jobgate.VMDone || vm.State == jobgate.VMDestroyed {
		return
	}
	now := f.now().UTC()
	wasIdle := vm.State == jobgate.VMAdmitted
	vm.State, vm.Reason, vm.EndedAt, vm.UpdatedAt = jobgate.VMDone, "agent deregistered: "+outcome, now, now
	f.store.PutVM(ctx, vm, nil)
	if p := f.pool(vm.Pool); p != nil && wasIdle && outcome == "idle" {
		// The agent waited its whole idle TTL: the jobs queued before it
		// was admitted were not for it.
		f.abandonJobs(ctx, p, vm)
	}
	f.Kick()
}
