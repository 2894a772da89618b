package fleet

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/jobgate"
)

// vmState is the record of the VM named name.
func (w *world) vmState(name string) *jobgate.VM {
	w.t.Helper()
	vm, err := w.store.VM(w.ctx, name)
	if err != nil {
		w.t.Fatal(err)
	}
	return vm
}

// TestReconcileDeadlines: each deadline of a VM's life, at the deadline
// (kept) and just past it (destroyed, with its reason).
func TestReconcileDeadlines(t *testing.T) {
	pool := func(p *PoolConfig) {
		p.AdmissionDeadline, p.IdleTTL, p.JobTimeout = jobgate.Duration(time.Minute), jobgate.Duration(2*time.Minute), jobgate.Duration(5*time.Minute)
		p.LaunchesPerMinute = 60
	}
	// at runs a reconcile at the deadline and one just past it.
	at := func(t *testing.T, w *world, name string, deadline time.Duration, reason string) {
		t.Helper()
		w.clock.Add(deadline)
		w.fleet.Reconcile(w.ctx)
		if vm := w.vmState(name); vm.State == jobgate.VMDestroyed {
			t.Fatalf("destroyed at its deadline: %+v", vm)
		}
		w.clock.Add(time.Second)
		w.fleet.Reconcile(w.ctx)
		if vm := w.vmState(name); vm.State != jobgate.VMDestroyed || !strings.Contains(vm.Reason, reason) {
			t.Fatalf("past its deadline: %+v, want destroyed: %s", vm, reason)
		}
	}
	t.Run("not yet listed by the provider", func(t *testing.T) {
		w := newWorld(t, worldOpts{noRecovery: true, pool: pool})
		w.queue(poolLabels...)
		w.fleet.Schedule(w.ctx)
		name := w.vms(jobgate.VMLaunching)[0].Name
		w.prov.kill(name)
		at(t, w, name, 29*time.Second, "vanished")
	})
	t.Run("admission deadline", func(t *testing.T) {
		w := newWorld(t, worldOpts{noRecovery: true, pool: pool})
		w.queue(poolLabels...)
		w.fleet.Schedule(w.ctx)
		at(t, w, w.vms(jobgate.VMLaunching)[0].Name, time.Minute, "not admitted within")
	})
	t.Run("idle TTL", func(t *testing.T) {
		w := newWorld(t, worldOpts{tpms: true, noRecovery: true, pool: pool})
		w.queue(poolLabels...)
		w.fleet.Schedule(w.ctx)
		name := w.vms(jobgate.VMLaunching)[0].Name
		if _, err := w.boot(w.prov.vm(name), name); err != nil {
			t.Fatal(err)
		}
		at(t, w, name, 2*time.Minute, "idle")
	})
	t.Run("job timeout", func(t *testing.T) {
		w := newWorld(t, worldOpts{tpms: true, noRecovery: true, pool: pool})
		w.queue(poolLabels...)
		w.fleet.Schedule(w.ctx)
		name := w.vms(jobgate.VMLaunching)[0].Name
		ag, err := w.boot(w.prov.vm(name), name)
		if err != nil {
			t.Fatal(err)
		}
		w.runJob(ag, true)
		at(t, w, name, 5*time.Minute, "job exceeded")
	})
	t.Run("done grace", func(t *testing.T) {
		w := newWorld(t, worldOpts{tpms: true, noRecovery: true, pool: pool})
		w.queue(poolLabels...)
		w.fleet.Schedule(w.ctx)
		name := w.vms(jobgate.VMLaunching)[0].Name
		ag, err := w.boot(w.prov.vm(name), name)
		if err != nil {
			t.Fatal(err)
		}
		w.deregister(ag, "failed")
		at(t, w, name, doneGrace, "after its agent tore down")
	})
}

// TestReconcileEnds: the other ends of a VM: it powered itself off after
// its agent tore down, its runner went away, or the provider still lists
// a VM recorded as destroyed; and a provider failing to destroy leaves the
// VM recorded as alive, to be destroyed by the next reconcile.
func TestReconcileEnds(t *testing.T) {
	admitted := func(t *testing.T, w *world) (string, *agent) {
		t.Helper()
		w.queue(poolLabels...)
		w.fleet.Schedule(w.ctx)
		name := w.vms(jobgate.VMLaunching)[0].Name
		ag, err := w.boot(w.prov.vm(name), name)
		if err != nil {
			t.Fatal(err)
		}
		return name, ag
	}
	t.Run("powered itself off", func(t *testing.T) {
		w := newWorld(t, worldOpts{tpms: true, noRecovery: true})
		name, ag := admitted(t, w)
		w.deregister(ag, "failed")
		w.prov.kill(name)
		w.fleet.Reconcile(w.ctx)
		if vm := w.vmState(name); vm.State != jobgate.VMDestroyed || !strings.Contains(vm.Reason, "powered itself off") {
			t.Fatalf("%+v", vm)
		}
	})
	t.Run("runner gone", func(t *testing.T) {
		w := newWorld(t, worldOpts{tpms: true, noRecovery: true})
		name, ag := admitted(t, w)
		if err := w.store.SetState(w.ctx, ag.resp.RunnerName, jobgate.StateRemoved, w.clock.Now(), nil); err != nil {
			t.Fatal(err)
		}
		w.fleet.Reconcile(w.ctx)
		if vm := w.vmState(name); vm.State != jobgate.VMDestroyed || !strings.Contains(vm.Reason, "its runner is gone") {
			t.Fatalf("%+v", vm)
		}
		// The VM did not wait out its idle TTL: the job it was launched
		// for may still come, and is not abandoned.
		jobs, _ := w.store.Jobs(w.ctx)
		if len(jobs) != 1 || jobs[0].State != jobgate.JobQueued {
			t.Fatalf("jobs %+v", jobs)
		}
	})
	t.Run("destroyed but still listed", func(t *testing.T) {
		w := newWorld(t, worldOpts{noRecovery: true})
		w.queue(poolLabels...)
		w.fleet.Schedule(w.ctx)
		vm := w.vms(jobgate.VMLaunching)[0]
		vm.State = jobgate.VMDestroyed
		if err := w.store.PutVM(w.ctx, &vm, nil); err != nil {
			t.Fatal(err)
		}
		w.fleet.Reconcile(w.ctx)
		if _, d, alive := w.prov.counts(); d != 1 || alive != 0 {
			t.Fatalf("%d destroyed, %d alive", d, alive)
		}
	})
	t.Run("provider fails to destroy", func(t *testing.T) {
		w := newWorld(t, worldOpts{noRecovery: true, pool: func(p *PoolConfig) { p.AdmissionDeadline = jobgate.Duration(time.Minute) }})
		w.queue(poolLabels...)
		w.fleet.Schedule(w.ctx)
		name := w.vms(jobgate.VMLaunching)[0].Name
		w.prov.mu.Lock()
		w.prov.destroyErr = errors.New("the cloud is down")
		w.prov.mu.Unlock()
		w.clock.Add(2 * time.Minute)
		w.fleet.Reconcile(w.ctx)
		if vm := w.vmState(name); vm.State != jobgate.VMLaunching {
			t.Fatalf("recorded %s though the provider did not destroy it", vm.State)
		}
		w.prov.mu.Lock()
		w.prov.destroyErr = nil
		w.prov.mu.Unlock()
		w.fleet.Reconcile(w.ctx)
		if vm := w.vmState(name); vm.State != jobgate.VMDestroyed {
			t.Fatalf("%+v", vm)
		}
	})
}

// TestScaleDownIdleVM: a spare admitted VM (its job was cancelled) loses
// its runner at GitHub first, then the VM; a spare VM whose runner GitHub
// will not remove (it just took a job) is kept.
func TestScaleDownIdleVM(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		t.Run(map[bool]string{false: "removed", true: "GitHub refuses"}[refuse], func(t *testing.T) {
			w := newWorld(t, worldOpts{tpms: true, noRecovery: true})
			rec := w.queue(poolLabels...)
			w.fleet.Schedule(w.ctx)
			name := w.vms(jobgate.VMLaunching)[0].Name
			ag, err := w.boot(w.prov.vm(name), name)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.gh.CancelJob(rec.Job.RunID); err != nil {
				t.Fatal(err)
			}
			w.waitDeliveries()
			w.clock.Add(scaleGrace + time.Second)
			if refuse {
				w.gh.FailNext("DELETE", "/orgs/octo-org/actions/runners/", 10, 422, 0)
			}
			w.fleet.Reconcile(w.ctx)
			vm := w.vmState(name)
			_, registered := w.gh.Runner(ag.resp.RunnerName)
			if refuse {
				if vm.State != jobgate.VMAdmitted || !registered {
					t.Fatalf("VM %s, runner registered %v: want the VM kept", vm.State, registered)
				}
				return
			}
			if vm.State != jobgate.VMDestroyed || !strings.Contains(vm.Reason, "scale down") || registered {
				t.Fatalf("VM %+v, runner registered %v: want both gone", vm, registered)
			}
			if !w.auditHas("fleet:removed:scale_down") {
				t.Fatalf("audit %v", w.audit())
			}
		})
	}
}

// TestAbandonOnlyJobsQueuedBefore: when an idle VM times out, only the
// jobs queued before it was admitted are abandoned; one queued after is
// still demand.
func TestAbandonOnlyJobsQueuedBefore(t *testing.T) {
	w := newWorld(t, worldOpts{tpms: true, noRecovery: true, pool: func(p *PoolConfig) { p.IdleTTL = jobgate.Duration(time.Minute) }})
	w.postWebhook("workflow_job", "a-1", "", workflowJob("queued", 501, poolLabels...))
	w.fleet.Schedule(w.ctx)
	name := w.vms(jobgate.VMLaunching)[0].Name
	w.clock.Add(time.Second)
	if _, err := w.boot(w.prov.vm(name), name); err != nil {
		t.Fatal(err)
	}
	w.clock.Add(time.Second)
	w.postWebhook("workflow_job", "a-2", "", workflowJob("queued", 502, "self-hosted", "linux"))
	w.clock.Add(time.Minute)
	w.fleet.Reconcile(w.ctx)
	if vm := w.vmState(name); vm.State != jobgate.VMDestroyed {
		t.Fatalf("%+v", vm)
	}
	if j := jobByID(t, w, 501); j.State != jobgate.JobAbandoned {
		t.Errorf("job queued before the admission: %s", j.State)
	}
	if j := jobByID(t, w, 502); j.State != jobgate.JobQueued {
		t.Errorf("job queued after the admission: %s", j.State)
	}
}
