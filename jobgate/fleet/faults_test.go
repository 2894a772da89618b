package fleet

import (
	"context"
	"crypto"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/jobgate"
)

var errStoreDown = errors.New("store: database connection lost")

// TestLaunchStoreFaults: a VM the store cannot record is not started (a
// VM is recorded before the provider starts it, so none runs unknown);
// one whose AK cannot be recorded is not reported launched.
func TestLaunchStoreFaults(t *testing.T) {
	w := newWorld(t, worldOpts{tpms: true, noRecovery: true})
	p := w.fleet.pool("linux")
	w.faults.set(func(f *faultyStore) { f.putVM = func(*jobgate.VM) error { return errStoreDown } })
	if err := w.fleet.launch(w.ctx, p); !errors.Is(err, errStoreDown) {
		t.Fatalf("launch with the store down: %v", err)
	}
	if n, _, _ := w.prov.counts(); n != 0 {
		t.Fatalf("%d VMs started that the store does not know", n)
	}
	w.faults.set(func(f *faultyStore) {
		f.putVM = func(vm *jobgate.VM) error {
			if len(vm.AK) > 0 {
				return errStoreDown
			}
			return nil
		}
	})
	if err := w.fleet.launch(w.ctx, p); !errors.Is(err, errStoreDown) {
		t.Fatalf("launch whose AK the store cannot record: %v", err)
	}
	vms := w.vms(jobgate.VMLaunching)
	if len(vms) != 1 || len(vms[0].AK) != 0 {
		t.Fatalf("VM records %+v", vms)
	}
	// Without its AK on record, the VM is not admitted on the fleet's
	// terms.
	if _, err := w.boot(w.prov.vm(vms[0].Name), vms[0].Name); rejectedCode(err) == "" {
		t.Fatalf("VM admitted without its AK recorded: %v", err)
	}
}

// badAKProvider launches VMs whose AK is of a kind no SPKI holds.
type badAKProvider struct{ *memProvider }

func (b badAKProvider) Launch(ctx context.Context, req *LaunchRequest) (*Launched, error) {
	if _, err := b.memProvider.Launch(ctx, req); err != nil {
		return nil, err
	}
	return &Launched{AK: crypto.PublicKey("not a key")}, nil
}

func TestLaunchUnrecordableAK(t *testing.T) {
	w := newWorld(t, worldOpts{noRecovery: true})
	p := w.fleet.pool("linux")
	p.provider = badAKProvider{w.prov}
	if err := w.fleet.launch(w.ctx, p); err == nil || !strings.Contains(err.Error(), "VM attestation key") {
		t.Fatalf("launch with an AK that does not marshal: %v", err)
	}
	if vms := w.vms(jobgate.VMLaunching); len(vms) != 1 || len(vms[0].AK) != 0 {
		t.Fatalf("VM records %+v", vms)
	}
}

// TestWebhookStoreFaults: a delivery the store cannot look up or record
// is refused with 503 and not marked seen: GitHub's redelivery is then
// processed.
func TestWebhookStoreFaults(t *testing.T) {
	w := newWorld(t, worldOpts{noRecovery: true})
	body := workflowJob("queued", 601, poolLabels...)
	for _, fault := range []func(*faultyStore){
		func(f *faultyStore) { f.deliverySeen = errStoreDown },
		func(f *faultyStore) { f.putJob = errStoreDown },
	} {
		w.faults.set(fault)
		if got := w.postWebhook("workflow_job", "f-1", "", body); got != http.StatusServiceUnavailable {
			t.Fatalf("store down: %d", got)
		}
		w.faults.set(func(f *faultyStore) { f.deliverySeen, f.putJob = nil, nil })
	}
	if got := w.postWebhook("workflow_job", "f-1", "", body); got != http.StatusAccepted {
		t.Fatalf("redelivery: %d", got)
	}
	if j := jobByID(t, w, 601); j.State != jobgate.JobQueued {
		t.Fatalf("%+v", j)
	}
}
