package jobgate_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
)

// fleetHooks is a fleet as the gate sees it: admission terms per VM, and
// what the gate told it.
type fleetHooks struct {
	mu           sync.Mutex
	terms        map[string]*jobgate.AdmissionTerms
	admitted     []string // vm=runner
	deregistered []string // runner=outcome
}

func (f *fleetHooks) Admission(_ context.Context, vmID string) (*jobgate.AdmissionTerms, error) {
	if vmID == "" {
		return nil, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.terms[vmID]
	if !ok {
		return nil, fmt.Errorf("VM %q is not being launched", vmID)
	}
	return t, nil
}

func (f *fleetHooks) Admitted(_ context.Context, vmID string, r *jobgate.Runner) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.admitted = append(f.admitted, vmID+"="+r.Name)
}

func (f *fleetHooks) Deregistered(_ context.Context, r *jobgate.Runner, outcome string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deregistered = append(f.deregistered, r.Name+"="+outcome)
}

// TestAdmitFleetTerms: an agent naming a fleet VM is admitted only on the
// fleet's terms: the VM's own AK (no other), the pool's labels only, the
// image the VM was launched with; the fleet hears of the admission and of
// the deregistration, which leaves the GitHub registration to the fleet.
func TestAdmitFleetTerms(t *testing.T) {
	h, fs := faultyHarness(t)
	ctx := context.Background()
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pool := []string{"self-hosted", "attested", "linux"}
	hooks := &fleetHooks{terms: map[string]*jobgate.AdmissionTerms{
		"linux-foreign-ak": {TrustedAK: other.Public(), Labels: pool},
		"linux-other-img":  {TrustedAK: h.machine.Policy.TrustedAKs[0], ImageID: "runner-other", Labels: pool},
		"linux-0001":       {TrustedAK: h.machine.Policy.TrustedAKs[0], ImageID: "test-image", Labels: pool, WorkFolder: "/scratch/_work"},
	}}
	h.gate.SetFleet(hooks)
	admitVM := func(vm string, labels ...string) (*gateapi.AdmitResponse, error) {
		nonce, ev := h.evidence(ctx)
		return h.client.Admit(ctx, &gateapi.AdmitRequest{Nonce: nonce, Evidence: ev, VMID: vm, Labels: labels})
	}
	for _, tc := range []struct{ name, vm, label, want string }{
		{"VM the fleet does not launch", "linux-unknown", "", "vm_refused"},
		{"another TPM than the VM's", "linux-foreign-ak", "", "untrusted_ak"},
		{"label outside the VM's pool", "linux-0001", "gpu", "label_not_allowed"},
		{"measurements of another image", "linux-other-img", "", "vm_image_mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var labels []string
			if tc.label != "" {
				labels = []string{tc.label}
			}
			if _, err := admitVM(tc.vm, labels...); rejectedCode(err) != tc.want {
				t.Fatalf("got %v, want %s", err, tc.want)
			}
		})
	}
	if h.gh.JITMints() != 0 || len(hooks.admitted) != 0 {
		t.Fatalf("%d runners minted, fleet told of %v", h.gh.JITMints(), hooks.admitted)
	}

	resp, err := admitVM("linux-0001", "linux")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(resp.Labels, ","); got != strings.Join(pool, ",") {
		t.Errorf("labels %s, want the pool's %v", got, pool)
	}
	jit, err := h.machine.Collector.HPKE().Open(gateapi.JITContext(resp.RunnerName), resp.SealedJITConfig)
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err := fakegithub.DecodeJITConfig(string(jit)); err != nil || cfg.Runner.WorkFolder != "/scratch/_work" {
		t.Errorf("JIT config %+v, %v: want the pool's work folder", cfg, err)
	}
	if want := "linux-0001=" + resp.RunnerName; strings.Join(hooks.admitted, " ") != want {
		t.Errorf("fleet told of admissions %v, want %s", hooks.admitted, want)
	}

	at := h.clock.Now()
	d := sha256.Sum256(gateapi.DeregisterMessage(resp.RunnerName, "done", "job completed", at))
	sig, err := h.machine.Collector.Signer().Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	dereg := &gateapi.DeregisterRequest{RunnerName: resp.RunnerName, Outcome: "done", Reason: "job completed", SignedAt: at, Signature: sig}
	fs.set(func(f *faultyStore) { f.setState = errStoreDown })
	if status, code := h.post(gateapi.PathDeregister, mustJSON(t, dereg)); status != 503 || code != "store_unavailable" {
		t.Errorf("store down at a fleet runner's deregistration: %d %s", status, code)
	}
	fs.set((*faultyStore).clear)
	if len(hooks.deregistered) != 0 {
		t.Errorf("fleet told of a deregistration the gate did not record: %v", hooks.deregistered)
	}
	out, err := h.client.Deregister(ctx, dereg)
	if err != nil || out.Removed {
		t.Fatalf("fleet runner deregistration: %+v, %v; want deregistered, not removed", out, err)
	}
	if _, ok := h.gh.Runner(resp.RunnerName); !ok {
		t.Error("the gate removed a fleet runner at GitHub itself")
	}
	if rec, err := h.store.Runner(ctx, resp.RunnerName); err != nil || rec.State != jobgate.StateDeregistered || rec.VMID != "linux-0001" {
		t.Errorf("record %+v, %v", rec, err)
	}
	if want := resp.RunnerName + "=done"; strings.Join(hooks.deregistered, " ") != want {
		t.Errorf("fleet told of deregistrations %v, want %s", hooks.deregistered, want)
	}
}
