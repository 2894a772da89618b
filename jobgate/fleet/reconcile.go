package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/attested-runner/attested-runner/jobgate"
)

// doneGrace is how long a VM whose agent deregistered may take to power
// itself off before the fleet destroys it.
const doneGrace = time.Minute

// Reconcile compares, for each pool this replica holds the lease of, the
// VMs the store knows with those the provider lists and the runners the
// gate knows, and destroys what outlived its purpose: a VM not admitted by
// its deadline, idle past its TTL, running a job past its limit, whose
// runner is gone, or still running after its agent tore down; a VM the
// store does not know; a runner whose VM is gone. No zombies either way.
// It then recovers missed webhook deliveries.
func (f *Fleet) Reconcile(ctx context.Context) {
	runners, err := f.store.Runners(ctx)
	if err != nil {
		f.log.Warn("fleet: reading runners", "err", err)
		return
	}
	byName := map[string]*jobgate.Runner{}
	for i := range runners {
		byName[runners[i].Name] = &runners[i]
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
		insts, err := p.provider.List(ctx)
		if err != nil {
			f.log.Warn("fleet: listing VMs", "pool", p.cfg.Name, "err", err)
			continue
		}
		present := map[string]bool{}
		for _, in := range insts {
			present[in.Name] = true
		}
		known := map[string]bool{}
		for i := range vms {
			vm := &vms[i]
			if vm.Pool != p.cfg.Name {
				continue
			}
			known[vm.Name] = true
			if vm.State == jobgate.VMDestroyed {
				if present[vm.Name] {
					f.destroy(ctx, p, vm, byName[vm.RunnerName], "destroyed but still listed by the provider")
				}
				continue
			}
			f.reconcileVM(ctx, p, vm, present[vm.Name], byName[vm.RunnerName])
		}
		f.scaleDown(ctx, p, byName)
		for _, in := range insts {
			if !known[in.Name] {
				// A VM this fleet has no record of (a launch whose record
				// was lost, another replica's crash): never left running.
				if err := p.provider.Destroy(ctx, in.Name); err != nil {
					f.log.Warn("fleet: destroying an unknown VM", "vm", in.Name, "err", err)
					continue
				}
				rctx, cancel := jobgate.RecordContext(ctx)
				f.gate.AuditRecord(rctx, &jobgate.AuditRecord{Action: "fleet", Result: "destroyed", Reason: "unknown_vm",
					Detail: fmt.Sprintf("pool %s: VM %s has no record", p.cfg.Name, in.Name)})
				cancel()
			}
		}
	}
	f.reapRunners(ctx, byName)
	f.settleRunners(ctx, byName)
	f.recoverDeliveries(ctx)
	if n, err := f.store.PruneFleet(ctx, f.now().Add(-24*time.Hour)); err == nil && n > 0 {
		f.log.Debug("fleet: pruned", "records", n)
	}
}

// reconcileVM decides one live VM's fate.
func (f *Fleet) reconcileVM(ctx context.Context, p *pool, vm *jobgate.VM, present bool, runner *jobgate.Runner) {
	now := f.now()
	runnerGone := runner != nil && (runner.State == jobgate.StateRemoved || runner.State == jobgate.StateDeregistered)
	reason := ""
	switch {
	case !present && vm.State == jobgate.VMLaunching && now.Sub(vm.LaunchedAt) < 30*time.Second:
		// Just launched: the provider may not list it yet.
	case !present && vm.State == jobgate.VMDone:
		reason = "powered itself off after its agent tore down"
	case !present:
		reason = "vanished: the provider no longer runs it"
	case vm.State == jobgate.VMLaunching && now.Sub(vm.LaunchedAt) > p.cfg.admissionDeadline():
		reason = fmt.Sprintf("not admitted within %s", p.cfg.admissionDeadline())
	case vm.State == jobgate.VMAdmitted && runnerGone:
		reason = "its runner is gone (" + string(runner.State) + ")"
	case vm.State == jobgate.VMAdmitted && now.Sub(vm.AdmittedAt) > p.cfg.idleTTL():
		reason = fmt.Sprintf("idle: no job within %s", p.cfg.idleTTL())
	case vm.State == jobgate.VMBusy && now.Sub(vm.BusyAt) > p.cfg.jobTimeout():
		reason = fmt.Sprintf("job exceeded %s", p.cfg.jobTimeout())
	case vm.State == jobgate.VMDone && now.Sub(vm.EndedAt) > doneGrace:
		reason = fmt.Sprintf("still running %s after its agent tore down", doneGrace)
	}
	if reason != "" {
		idle := vm.State == jobgate.VMAdmitted && !runnerGone
		f.destroy(ctx, p, vm, runner, reason)
		if idle {
			f.abandonJobs(ctx, p, vm)
		}
	}
}

// abandonJobs: the pool's jobs that were queued while an idle VM of the
// pool waited a whole idle TTL never came to it (GitHub gave them to
// another runner, or they never existed: a job that never arrives). They
// stop creating demand, so no VM is launched for them again and again.
func (f *Fleet) abandonJobs(ctx context.Context, p *pool, vm *jobgate.VM) {
	jobs, err := f.store.Jobs(ctx)
	if err != nil {
		return
	}
	for i := range jobs {
		j := &jobs[i]
		if j.Pool != p.cfg.Name || j.State != jobgate.JobQueued || j.UpdatedAt.After(vm.AdmittedAt) {
			continue
		}
		j.State, j.UpdatedAt = jobgate.JobAbandoned, f.now().UTC()
		if err := f.store.PutJob(ctx, j); err != nil {
			continue
		}
		f.gate.AuditRecord(ctx, &jobgate.AuditRecord{Action: "fleet", Result: "abandoned", Reason: "job_never_arrived",
			Detail: fmt.Sprintf("pool %s: job %d of %s (run %d) stayed queued while VM %s, admitted at %s, waited for a job until %s",
				p.cfg.Name, j.ID, j.Repository, j.RunID, vm.Name, vm.AdmittedAt.Format(time.RFC3339), f.now().UTC().Format(time.RFC3339))})
	}
}

// scaleGrace: a VM is not scaled down within this long of its last change
// (a webhook about its job may be on its way).
const scaleGrace = 30 * time.Second

// scaleDown destroys spare VMs beyond the pool's demand and minIdle (a
// cancelled job, a job another runner took): launching ones first (no
// runner yet, nothing spent at GitHub), then idle ones, whose runner is
// removed from GitHub first; GitHub refuses to remove a runner that just
// took a job, and that VM is kept.
func (f *Fleet) scaleDown(ctx context.Context, p *pool, byName map[string]*jobgate.Runner) {
	jobs, err := f.store.Jobs(ctx)
	if err != nil {
		return
	}
	vms, err := f.store.VMs(ctx)
	if err != nil {
		return
	}
	demand := queued(jobs, p.cfg.Name)
	var launching, idle []*jobgate.VM
	for i := range vms {
		vm := &vms[i]
		if vm.Pool != p.cfg.Name {
			continue
		}
		switch vm.State {
		case jobgate.VMLaunching:
			launching = append(launching, vm)
		case jobgate.VMAdmitted:
			idle = append(idle, vm)
		}
	}
	excess := len(launching) + len(idle) - demand - p.cfg.MinIdle
	now := f.now()
	for _, vm := range append(launching, idle...) {
		if excess <= 0 {
			return
		}
		if now.Sub(vm.UpdatedAt) < scaleGrace {
			continue
		}
		if r := byName[vm.RunnerName]; vm.State == jobgate.VMAdmitted && r != nil && r.State == jobgate.StateLive {
			if err := f.gate.Registry().Remove(ctx, r.ID); err != nil {
				f.log.Info("fleet: keeping a spare VM whose runner GitHub would not remove", "vm", vm.Name, "err", err)
				continue
			}
			rctx, cancel := jobgate.RecordContext(ctx)
			if err := f.store.SetState(rctx, r.Name, jobgate.StateRemoved, now, &jobgate.AuditRecord{Time: now.UTC(), Action: "fleet",
				Result: "removed", Reason: "scale_down", RunnerName: r.Name, RunnerID: r.ID, KeyDigest: r.KeyDigest,
				Detail: "spare runner of VM " + vm.Name + ": no queued job needs it"}); err != nil {
				f.log.Warn("fleet: recording a removed runner", "runner", r.Name, "err", err)
			}
			cancel()
			r.State = jobgate.StateRemoved
		}
		f.destroy(ctx, p, vm, byName[vm.RunnerName], fmt.Sprintf("scale down: %d queued jobs and minIdle %d need fewer VMs", demand, p.cfg.MinIdle))
		excess--
	}
}

// destroy stops a VM, removes its runner from GitHub if it still has one,
// and records both.
func (f *Fleet) destroy(ctx context.Context, p *pool, vm *jobgate.VM, runner *jobgate.Runner, reason string) {
	if err := p.provider.Destroy(ctx, vm.Name); err != nil {
		f.log.Warn("fleet: destroy", "vm", vm.Name, "err", err)
		return
	}
	if runner != nil && runner.State == jobgate.StateLive {
		f.removeRunner(ctx, runner, "runner_without_vm", "its VM "+vm.Name+" was destroyed: "+reason)
	}
	now := f.now().UTC()
	was := vm.State
	if vm.State != jobgate.VMDestroyed {
		vm.State, vm.Reason, vm.EndedAt, vm.UpdatedAt = jobgate.VMDestroyed, reason, now, now
	}
	rctx, cancel := jobgate.RecordContext(ctx)
	defer cancel()
	if err := f.store.PutVM(rctx, vm, &jobgate.AuditRecord{Time: now, Action: "fleet", Result: "destroyed", Reason: "vm_" + string(was),
		RunnerName: vm.RunnerName, Detail: fmt.Sprintf("pool %s: VM %s destroyed: %s", p.cfg.Name, vm.Name, reason)}); err != nil {
		f.log.Warn("fleet: recording a destroyed VM", "vm", vm.Name, "err", err)
	}
	f.log.Info("fleet: destroyed", "pool", p.cfg.Name, "vm", vm.Name, "was", was, "reason", reason)
}

// reapRunners removes live runners whose fleet VM is gone.
func (f *Fleet) reapRunners(ctx context.Context, byName map[string]*jobgate.Runner) {
	for _, r := range byName {
		if r.VMID == "" || r.State != jobgate.StateLive {
			continue
		}
		vm, err := f.store.VM(ctx, r.VMID)
		if err != nil || vm.State != jobgate.VMDestroyed {
			continue
		}
		if p := f.pool(vm.Pool); p != nil && !f.leaseFor(ctx, p) {
			continue
		}
		f.removeRunner(ctx, r, "runner_without_vm", "its VM "+vm.Name+" is gone ("+vm.Reason+")")
	}
}

// settleRunners finishes deregistered fleet runners: a runner whose job
// GitHub reported completed is gone at GitHub already (ephemeral), so its
// record is closed without a request; any other is removed from GitHub
// once its VM's done grace has passed.
func (f *Fleet) settleRunners(ctx context.Context, byName map[string]*jobgate.Runner) {
	var jobs []jobgate.QueuedJob
	for _, r := range byName {
		if r.VMID == "" || r.State != jobgate.StateDeregistered {
			continue
		}
		vm, err := f.store.VM(ctx, r.VMID)
		if err != nil {
			continue
		}
		if p := f.pool(vm.Pool); p != nil && !f.leaseFor(ctx, p) {
			continue
		}
		if jobs == nil {
			if jobs, err = f.store.Jobs(ctx); err != nil {
				return
			}
		}
		ran := slices.ContainsFunc(jobs, func(j jobgate.QueuedJob) bool {
			return j.RunnerName == r.Name && j.State == jobgate.JobCompleted
		})
		now := f.now()
		switch {
		case ran:
			f.store.SetState(ctx, r.Name, jobgate.StateRemoved, now, &jobgate.AuditRecord{Time: now.UTC(), Action: "fleet",
				Result: "gone", Reason: "ephemeral", RunnerName: r.Name, RunnerID: r.ID, KeyDigest: r.KeyDigest,
				Detail: "GitHub reported its job completed and deletes an ephemeral runner after its job"})
			r.State = jobgate.StateRemoved
		case now.Sub(r.UpdatedAt) > doneGrace:
			f.removeRunner(ctx, r, "deregistered_no_job", "deregistered without a completed job")
		}
	}
}

// busyBackoff: how long a runner GitHub calls busy is left alone (unless
// its job's completed webhook comes first).
const busyBackoff = 2 * time.Minute

func (f *Fleet) removeRunner(ctx context.Context, r *jobgate.Runner, reason, why string) {
	f.mu.Lock()
	until, waiting := f.busyUntil[r.Name]
	f.mu.Unlock()
	if waiting && f.now().Before(until) {
		return
	}
	if err := f.gate.Registry().Remove(ctx, r.ID); err != nil {
		if errors.Is(err, jobgate.ErrRunnerBusy) {
			// The VM is gone but GitHub still counts the job as running:
			// one request per backoff, not per reconcile.
			f.mu.Lock()
			if f.busyUntil == nil {
				f.busyUntil = map[string]time.Time{}
			}
			f.busyUntil[r.Name] = f.now().Add(busyBackoff)
			f.mu.Unlock()
			f.log.Info("fleet: GitHub still runs a job on a runner whose VM is gone; retrying when the job ends", "runner", r.Name)
			return
		}
		f.log.Warn("fleet: removing a runner", "runner", r.Name, "err", err)
		return
	}
	f.mu.Lock()
	delete(f.busyUntil, r.Name)
	f.mu.Unlock()
	rctx, cancel := jobgate.RecordContext(ctx)
	defer cancel()
	if err := f.store.SetState(rctx, r.Name, jobgate.StateRemoved, f.now(), &jobgate.AuditRecord{Time: f.now().UTC(), Action: "fleet",
		Result: "removed", Reason: reason, RunnerName: r.Name, RunnerID: r.ID, KeyDigest: r.KeyDigest, Detail: why}); err != nil {
		f.log.Warn("fleet: recording a removed runner", "runner", r.Name, "err", err)
	}
	r.State = jobgate.StateRemoved
}
