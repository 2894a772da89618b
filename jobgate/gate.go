package jobgate

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
)

// Gate is the verifier and registrar. Build it with New; serve Handler and
// call Reconcile periodically (Run does both).
type Gate struct {
	store        Store
	registry     Registry
	policy       *attest.Policy
	policyDigest string
	signer       crypto.Signer
	rootsPEM     []byte
	// sigstore is the policy's Sigstore instances, told to every admitted
	// environment (nil: key-signed bundles only).
	sigstore  *gateapi.Sigstore
	log       *slog.Logger
	now       func() time.Time
	metrics   *metrics
	verifySem chan struct{}

	gateID, builderID string
	labels            []string
	allowedLabels     map[string]bool
	namePrefix        string
	nonceTTL          time.Duration
	certTTL           time.Duration
	unclaimedTTL      time.Duration
	pendingTTL        time.Duration
	deregisterSkew    time.Duration
	reconcileEvery    time.Duration
	offlineGrace      time.Duration

	// offlineSince remembers when reconcile first saw each runner offline
	// (in memory: a restart restarts the grace, erring towards keeping).
	offlineMu    sync.Mutex
	offlineSince map[string]time.Time

	hooks FleetHooks
}

// FleetHooks let the gate's fleet (jobgate/fleet) take part in admissions
// and deregistrations of the VMs it launched.
type FleetHooks interface {
	// Admission is asked before an agent's evidence is verified, with the
	// VM the agent names ("" for none). It refuses (an error, reported
	// with its message) or returns the terms of the admission.
	Admission(ctx context.Context, vmID string) (*AdmissionTerms, error)
	// Admitted is told of an admission that succeeded.
	Admitted(ctx context.Context, vmID string, r *Runner)
	// Deregistered is told of a runner its agent deregistered.
	Deregistered(ctx context.Context, r *Runner, outcome string)
}

// AdmissionTerms are what a fleet sets for one VM's admission.
type AdmissionTerms struct {
	// TrustedAK, if set, is the VM's attestation key and the only one
	// trusted for this admission (the fleet made the VM's TPM and read its
	// AK, or the cloud reported its vTPM's): the policy's other AKs and AK
	// roots do not apply, so no other machine can take the VM's place.
	TrustedAK crypto.PublicKey
	// ImageID, if set, is the reference image the VM was launched with:
	// its measurements must match that image and no other.
	ImageID string
	// Labels, if set, are the runner's labels (the VM's pool's); the
	// agent may not ask for others.
	Labels []string
	// WorkFolder, if set, is the JIT runner's work folder.
	WorkFolder string
	// TrustedEKs, if set, are the EK roots under which this VM's AK may be
	// proven by credential activation (the pool's), in place of the
	// policy's.
	TrustedEKs *attest.EKTrust
	// RequireActivation refuses an admission that does not prove its AK
	// by EK credential activation.
	RequireActivation bool
}

// reconcileDefault is how often the gate lists the scope's runners at
// GitHub: every minute, or with a fleet (which watches its VMs and removes
// their runners by id) every 30 minutes, as a backstop.
func reconcileDefault(c *Config) time.Duration {
	if c.HasFleet() {
		return 30 * time.Minute
	}
	return time.Minute
}

// SetFleet attaches the fleet's hooks (before serving).
func (g *Gate) SetFleet(h FleetHooks) { g.hooks = h }

// Store is the gate's store (the fleet keeps its state there too).
func (g *Gate) Store() Store { return g.store }

// Registry is the gate's GitHub registry (the fleet removes runners of VMs
// it destroys).
func (g *Gate) Registry() Registry { return g.registry }

// AuditRecord appends a record to the gate's audit log.
func (g *Gate) AuditRecord(ctx context.Context, rec *AuditRecord) { g.auditRecord(ctx, rec) }

// Signer is the gate's certificate key (the fleet signs launch VSAs).
func (g *Gate) Signer() crypto.Signer { return g.signer }

// ID is the gate's id (the verifier of its VSAs).
func (g *Gate) ID() string { return g.gateID }

// Options assemble a Gate. Config supplies identities, labels and TTLs;
// the other fields are the gate's collaborators, injected so tests can use
// a fake GitHub and a fixed clock.
type Options struct {
	Config       *Config
	Store        Store
	Registry     Registry
	Policy       *attest.Policy
	PolicyDigest string
	Signer       crypto.Signer
	Logger       *slog.Logger
	Now          func() time.Time
}

// New checks the options and builds a Gate. A nil or empty policy is an
// error: the gate never starts open.
func New(o Options) (*Gate, error) {
	c := o.Config
	switch {
	case c == nil:
		return nil, errors.New("jobgate: no configuration")
	case o.Store == nil || o.Registry == nil || o.Signer == nil:
		return nil, errors.New("jobgate: store, registry and signer are required")
	case o.Policy == nil:
		return nil, fmt.Errorf("jobgate: %w", attest.ErrPolicyEmpty)
	}
	if err := o.Policy.Reference.Validate(); err != nil {
		return nil, fmt.Errorf("jobgate: %w", err)
	}
	if len(o.Policy.TrustedAKs) == 0 && len(o.Policy.TrustedAKRoots) == 0 && o.Policy.TrustedEKs.Empty() && !c.HasFleet() {
		// (A fleet's VMs each bring the AK their provider enrolled; other
		// agents are then refused for want of a trust root.)
		return nil, fmt.Errorf("jobgate: %w", attest.ErrNoTrustRoot)
	}
	roots, err := PublicKeyPEM(o.Signer.Public())
	if err != nil {
		return nil, err
	}
	g := &Gate{
		store: o.Store, registry: o.Registry, policy: o.Policy, policyDigest: o.PolicyDigest,
		signer: o.Signer, rootsPEM: roots, log: o.Logger, now: o.Now,
		metrics: newMetrics(), gateID: c.GateID, builderID: c.BuilderID,
		labels: c.GitHub.Labels, allowedLabels: map[string]bool{}, namePrefix: c.namePrefix(),
		nonceTTL:       c.TTL.Nonce.Or(60 * time.Second),
		certTTL:        c.TTL.Certificate.Or(6 * time.Hour),
		unclaimedTTL:   c.TTL.UnclaimedRunner.Or(15 * time.Minute),
		deregisterSkew: c.TTL.DeregisterSkew.Or(15 * time.Minute),
		reconcileEvery: c.TTL.ReconcileInterval.Or(reconcileDefault(c)),
		offlineGrace:   c.TTL.OfflineGrace.Or(2 * time.Minute),
		offlineSince:   map[string]time.Time{},
		pendingTTL:     5 * time.Minute,
		sigstore:       c.Policy.Sigstore,
	}
	for _, l := range c.Policy.AllowedLabels {
		g.allowedLabels[l] = true
	}
	if g.log == nil {
		g.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if g.now == nil {
		g.now = time.Now
	}
	n := 2 * runtime.GOMAXPROCS(0)
	if c.Limits != nil && c.Limits.MaxConcurrentVerifications > 0 {
		n = c.Limits.MaxConcurrentVerifications
	}
	g.verifySem = make(chan struct{}, n)
	return g, nil
}

// ObserveGitHub counts a GitHub response status in the gate's metrics; pass
// it as GitHubOptions.Observe of the gate's registry.
func (g *Gate) ObserveGitHub(status int) { g.metrics.githubStatus(status) }

// runnerName derives a runner's name from its environment key: unique per
// key, so GitHub itself refuses a second runner for one admission.
func (g *Gate) runnerName(keyDigest string) string { return g.namePrefix + keyDigest[:24] }

// Run serves nothing itself; it runs the reconcile loop until ctx ends.
// The command serves Handler alongside.
func (g *Gate) Run(ctx context.Context) error {
	t := time.NewTicker(g.reconcileEvery)
	defer t.Stop()
	for {
		rep, err := g.Reconcile(ctx)
		if err != nil {
			g.log.Warn("reconcile failed", "err", err)
		} else if rep.Removed > 0 || rep.Gone > 0 || rep.Released > 0 {
			g.log.Info("reconciled", "removed", rep.Removed, "gone", rep.Gone, "released", rep.Released)
		}
		if n, err := g.store.PruneNonces(ctx, g.now()); err == nil && n > 0 {
			g.log.Debug("pruned nonces", "count", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
