package fleet

import (
	"crypto"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/jobgate"
)

func TestNewRefuses(t *testing.T) {
	w := newWorld(t, worldOpts{noRecovery: true})
	valid := func() Options {
		return Options{Config: w.cfg, Gate: w.gate, WebhookSecret: testSecret, ImageSigners: []crypto.PublicKey{w.img.signer},
			Providers: map[string]Provider{"linux": w.prov}}
	}
	if _, err := New(valid()); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	for _, tc := range []struct {
		name    string
		edit    func(*Options)
		wantErr string
	}{
		{"no configuration", func(o *Options) { o.Config = nil }, "configuration and gate are required"},
		{"no gate", func(o *Options) { o.Gate = nil }, "configuration and gate are required"},
		{"webhook secret of 15 bytes", func(o *Options) { o.WebhookSecret = testSecret[:15] }, "at least 16 bytes"},
		{"no image signers", func(o *Options) { o.ImageSigners = nil }, "policy.imageSigners is required"},
		{"pool without a provider", func(o *Options) { o.Providers = map[string]Provider{"other": w.prov} }, "pool linux has no provider"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := valid()
			tc.edit(&o)
			if _, err := New(o); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New: %v, want %q", err, tc.wantErr)
			}
		})
	}
	o := valid()
	o.WebhookSecret = testSecret[:16]
	if _, err := New(o); err != nil {
		t.Fatalf("a 16-byte secret: %v", err)
	}
}

// TestAdmissionRefusals: the fleet's refusals of a VM it cannot vouch for
// (its record names a pool the gate no longer has, or an AK that does not
// parse); an agent naming no VM gets no fleet terms, only the gate's own
// policy.
func TestAdmissionRefusals(t *testing.T) {
	w := newWorld(t, worldOpts{tpms: true, noRecovery: true, pool: func(p *PoolConfig) { p.MinIdle, p.LaunchesPerMinute = 3, 60 }})
	w.fleet.Schedule(w.ctx)
	vms := w.vms(jobgate.VMLaunching)
	if len(vms) != 3 {
		t.Fatalf("%d VMs", len(vms))
	}
	gone, junk, none := vms[0], vms[1], vms[2]
	gone.Pool = "retired"
	junk.AK = []byte("not a key")
	for _, vm := range []*jobgate.VM{&gone, &junk} {
		if err := w.store.PutVM(w.ctx, vm, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.boot(w.prov.vm(gone.Name), gone.Name); rejectedCode(err) != "vm_refused" {
		t.Errorf("VM of a pool the gate no longer has: %v", err)
	}
	if _, err := w.boot(w.prov.vm(junk.Name), junk.Name); rejectedCode(err) != "vm_refused" {
		t.Errorf("VM whose AK record does not parse: %v", err)
	}
	// Naming no VM, the pool's labels are the gate's policy's to grant
	// (it grants none of them).
	if _, err := w.boot(w.prov.vm(none.Name), ""); rejectedCode(err) != "label_not_allowed" {
		t.Errorf("agent naming no VM: %v", err)
	}
	if n := w.gh.JITMints(); n != 0 {
		t.Fatalf("%d runners minted", n)
	}
}

// TestLeaseHeldByAnotherReplica: while another replica holds a pool's
// lease, this one neither launches nor reaps the pool's VMs.
func TestLeaseHeldByAnotherReplica(t *testing.T) {
	w := newWorld(t, worldOpts{noRecovery: true, pool: func(p *PoolConfig) { p.AdmissionDeadline = jobgate.Duration(time.Minute) }})
	w.queue(poolLabels...)
	w.fleet.Schedule(w.ctx)
	if n, _, _ := w.prov.counts(); n != 1 {
		t.Fatalf("%d launches", n)
	}
	now := w.clock.Now()
	w.clock.Add(2 * time.Minute)
	// Our lease ran out; another replica takes the pool.
	if err := w.store.Lease(w.ctx, "fleet/linux", "gate-other", w.clock.Now(), w.clock.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	w.queue(poolLabels...)
	w.fleet.Schedule(w.ctx)
	w.fleet.Reconcile(w.ctx)
	if n, d, _ := w.prov.counts(); n != 1 || d != 0 {
		t.Fatalf("%d launches, %d destroyed while another replica holds the pool (since %s)", n, d, now)
	}
}

type budget struct {
	remaining int
	reset     time.Time
	known     bool
}

func (b budget) Budget() (int, time.Time, bool) { return b.remaining, b.reset, b.known }

// TestLaunchBudget: launches stop while GitHub's stated quota is below the
// pool's reserve and its reset is ahead; they go on when the quota is not
// known, at the reserve, or once the reset has passed.
func TestLaunchBudget(t *testing.T) {
	for _, tc := range []struct {
		name   string
		budget func(now time.Time) budget
		want   int
	}{
		{"below the reserve", func(now time.Time) budget { return budget{499, now.Add(time.Hour), true} }, 0},
		{"at the reserve", func(now time.Time) budget { return budget{500, now.Add(time.Hour), true} }, 1},
		{"below the reserve after its reset", func(now time.Time) budget { return budget{0, now.Add(-time.Second), true} }, 1},
		{"not known", func(now time.Time) budget { return budget{0, now.Add(time.Hour), false} }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, worldOpts{noRecovery: true})
			w.fleet.budget = tc.budget(w.clock.Now())
			w.queue(poolLabels...)
			w.fleet.Schedule(w.ctx)
			if n, _, _ := w.prov.counts(); n != tc.want {
				t.Fatalf("%d launches, want %d", n, tc.want)
			}
		})
	}
}
