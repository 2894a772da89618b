package fleet

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/provenance"
)

var poolLabels = []string{"self-hosted", "attested", "linux"}

// A queued job whose labels the pool covers launches exactly one VM, from
// an image verified just before, with a signed launch VSA in the audit
// log; a second pass launches nothing more; a job the pool does not cover
// launches nothing.
func TestQueuedJobLaunchesOneVM(t *testing.T) {
	w := newWorld(t, worldOpts{})
	w.queue("self-hosted", "gpu")
	w.fleet.Schedule(w.ctx)
	if n, _, _ := w.prov.counts(); n != 0 {
		t.Fatalf("a job the pool does not serve launched %d VMs", n)
	}
	w.queue("self-hosted", "Attested", "linux") // labels compare case-insensitively
	w.fleet.Schedule(w.ctx)
	w.fleet.Schedule(w.ctx)
	if n, _, _ := w.prov.counts(); n != 1 {
		t.Fatalf("%d launches for one queued job, want 1", n)
	}
	vms := w.vms(jobgate.VMLaunching)
	if len(vms) != 1 || vms[0].ImageID != "runner-test" || vms[0].Pool != "linux" {
		t.Fatalf("VM records: %+v", vms)
	}
	req := w.prov.vm(vms[0].Name).req
	if !bytes.Equal(req.Boot.Files["initrd.img"], []byte("initrd bytes")) {
		t.Fatalf("the provider was handed %q, not the verified initrd", req.Boot.Files["initrd.img"])
	}
	var vsa []byte
	w.store.AuditLog(w.ctx, func(r jobgate.AuditRecord) error {
		if r.Action == "launch" && r.Result == "verified" {
			vsa = r.Attestation
		}
		return nil
	})
	vmName, files, err := provenance.VerifyLaunchVSA(vsa, []crypto.PublicKey{w.gate.Signer().Public()})
	if err != nil {
		t.Fatal(err)
	}
	if vmName != vms[0].Name || len(files) != 3 {
		t.Fatalf("launch VSA for %s: %v", vmName, files)
	}
}

// MinIdle keeps a warm pool without jobs; MaxTotal caps demand.
func TestMinIdleAndMaxTotal(t *testing.T) {
	w := newWorld(t, worldOpts{pool: func(p *PoolConfig) { p.MinIdle, p.MaxTotal, p.LaunchesPerMinute = 2, 3, 60 }})
	w.fleet.Schedule(w.ctx)
	if n, _, _ := w.prov.counts(); n != 2 {
		t.Fatalf("warm pool: %d launches, want minIdle 2", n)
	}
	for range 4 {
		w.queue(poolLabels...)
	}
	w.fleet.Schedule(w.ctx)
	if n, _, _ := w.prov.counts(); n != 3 {
		t.Fatalf("%d launches with maxTotal 3", n)
	}
}

// Launches follow the pool's rate limit, and stop while the
// installation's remaining quota is below the reserve.
func TestLaunchRateAndBudget(t *testing.T) {
	t.Run("rate", func(t *testing.T) {
		w := newWorld(t, worldOpts{pool: func(p *PoolConfig) { p.MaxTotal, p.LaunchesPerMinute = 10, 2 }})
		for range 5 {
			w.queue(poolLabels...)
		}
		w.fleet.Schedule(w.ctx)
		if n, _, _ := w.prov.counts(); n != 2 {
			t.Fatalf("%d launches at 2 per minute", n)
		}
		w.clock.Add(30 * time.Second)
		w.fleet.Schedule(w.ctx)
		if n, _, _ := w.prov.counts(); n != 3 {
			t.Fatalf("%d launches 30 s later, want 3", n)
		}
	})
	t.Run("budget", func(t *testing.T) {
		w := newWorld(t, worldOpts{pool: func(p *PoolConfig) { p.ReserveRequests = 5000 }})
		if _, err := w.reg.List(w.ctx); err != nil { // GitHub states the quota
			t.Fatal(err)
		}
		if rem, _, known := w.reg.Budget(); !known || rem >= 5000 {
			t.Fatalf("budget %d known %v", rem, known)
		}
		w.queue(poolLabels...)
		w.fleet.Schedule(w.ctx)
		if n, _, _ := w.prov.counts(); n != 0 {
			t.Fatalf("%d launches below the reserve", n)
		}
	})
}

// Before every launch the image's files are checked against its signed
// provenance: a one-byte change to any boot file, or provenance from an
// untrusted signer, launches nothing and is audited.
func TestImageRefusedBeforeLaunch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(w *world)
		want   string
	}{
		{"kernel byte changed", func(w *world) { flipByte(t, filepath.Join(w.img.dir, "vmlinuz")) }, "vmlinuz"},
		{"initrd byte changed", func(w *world) { flipByte(t, filepath.Join(w.img.dir, "initrd.img")) }, "initrd.img"},
		{"cmdline changed", func(w *world) { flipByte(t, filepath.Join(w.img.dir, "cmdline")) }, "cmdline"},
		{"initrd missing", func(w *world) { os.Remove(filepath.Join(w.img.dir, "initrd.img")) }, "initrd.img"},
		{"untrusted signer", func(w *world) {
			other := newImage(t, w.img.rv)
			b, _ := os.ReadFile(other.provenance)
			os.WriteFile(w.img.provenance, b, 0o644)
		}, "signature"},
		{"provenance corrupt", func(w *world) { os.WriteFile(w.img.provenance, []byte("{"), 0o644) }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, worldOpts{})
			tc.break_(w)
			w.queue(poolLabels...)
			w.fleet.Schedule(w.ctx)
			if n, _, _ := w.prov.counts(); n != 0 {
				t.Fatalf("a refused image launched %d VMs", n)
			}
			var detail string
			w.store.AuditLog(w.ctx, func(r jobgate.AuditRecord) error {
				if r.Action == "launch" && r.Reason == "image_refused" {
					detail = r.Detail
				}
				return nil
			})
			if detail == "" || !strings.Contains(detail, tc.want) {
				t.Fatalf("audit detail %q, want it to name %q", detail, tc.want)
			}
			if len(w.vms(jobgate.VMLaunching)) != 0 {
				t.Fatal("a refused launch left a VM record")
			}
		})
	}
	t.Run("verifyImage error", func(t *testing.T) {
		w := newWorld(t, worldOpts{})
		flipByte(t, filepath.Join(w.img.dir, "vmlinuz"))
		_, err := verifyImage(w.ctx, &w.cfg.Pools[0], "vm", []crypto.PublicKey{w.img.signer}, "gate", w.gate.Signer(), w.clock.Now())
		if !errors.Is(err, ErrImageRefused) || !errors.Is(err, provenance.ErrSubjectMismatch) {
			t.Fatalf("got %v", err)
		}
	})
}

func flipByte(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A fleet VM is admitted once, while launching, with its own TPM's AK (no
// other), the pool's labels and the image it was launched with.
func TestAdmissionBoundToTheVM(t *testing.T) {
	w := newWorld(t, worldOpts{tpms: true, pool: func(p *PoolConfig) { p.MinIdle, p.LaunchesPerMinute = 2, 60 }})
	w.fleet.Schedule(w.ctx)
	vms := w.vms(jobgate.VMLaunching)
	if len(vms) != 2 {
		t.Fatalf("%d VMs", len(vms))
	}
	a, b := w.prov.vm(vms[0].Name), w.prov.vm(vms[1].Name)

	// VM b's TPM claiming to be VM a: a's AK is the only one trusted.
	if _, err := w.boot(b, a.name); rejectedCode(err) != "untrusted_ak" {
		t.Fatalf("another VM's TPM naming VM %s: %v (code %q)", a.name, err, rejectedCode(err))
	}
	if _, err := w.boot(a, "linux-unknown"); rejectedCode(err) != "vm_refused" {
		t.Fatalf("unknown VM name: %v", err)
	}
	ag, err := w.boot(a, a.name)
	if err != nil {
		t.Fatal(err)
	}
	if got := ag.resp.Labels; strings.Join(got, ",") != "self-hosted,attested,linux" {
		t.Fatalf("labels %v, want the pool's", got)
	}
	vm, _ := w.store.VM(w.ctx, a.name)
	if vm.State != jobgate.VMAdmitted || vm.RunnerName != ag.resp.RunnerName {
		t.Fatalf("VM after admission: %+v", vm)
	}
	if _, err := w.boot(a, a.name); rejectedCode(err) != "vm_refused" {
		t.Fatalf("second admission of one VM: %v", err)
	}
	// A VM whose record says another image: its measurements do not match.
	vmb, _ := w.store.VM(w.ctx, b.name)
	vmb.ImageID = "runner-other"
	w.store.PutVM(w.ctx, vmb, nil)
	if _, err := w.boot(b, b.name); rejectedCode(err) != "vm_image_mismatch" {
		t.Fatalf("image mismatch: %v", err)
	}
}

// The whole lifecycle: queued -> launched -> admitted -> job in progress
// (busy) -> completed -> deregistered (done) -> destroyed, with the
// GitHub requests it cost.
func TestJobLifecycle(t *testing.T) {
	w := newWorld(t, worldOpts{tpms: true, noRecovery: true})
	inst0, _ := w.reg.Requests()
	w.queue(poolLabels...)
	w.fleet.Schedule(w.ctx)
	vm := w.vms(jobgate.VMLaunching)[0]
	ag, err := w.boot(w.prov.vm(vm.Name), vm.Name)
	if err != nil {
		t.Fatal(err)
	}
	rc, job := w.runJob(ag, true)
	if got, _ := w.store.VM(w.ctx, vm.Name); got.State != jobgate.VMBusy || got.JobID == 0 {
		t.Fatalf("VM running the job: %+v", got)
	}
	if err := rc.Complete(w.ctx, job.RequestID, fakegithub.ResultSucceeded); err != nil {
		t.Fatal(err)
	}
	w.waitDeliveries()
	w.deregister(ag, "done")
	if got, _ := w.store.VM(w.ctx, vm.Name); got.State != jobgate.VMDone {
		t.Fatalf("VM after teardown: %+v", got)
	}
	w.clock.Add(2 * time.Minute) // it did not power itself off
	w.fleet.Reconcile(w.ctx)
	if got, _ := w.store.VM(w.ctx, vm.Name); got.State != jobgate.VMDestroyed {
		t.Fatalf("VM after the done grace: %+v", got)
	}
	if _, _, alive := w.prov.counts(); alive != 0 {
		t.Fatalf("%d VMs left", alive)
	}
	if !w.auditHas("fleet:gone:ephemeral") {
		t.Fatalf("audit: %v", w.audit())
	}
	if r, _ := w.store.Runner(w.ctx, ag.resp.RunnerName); r.State != jobgate.StateRemoved {
		t.Fatalf("runner record: %+v", r)
	}
	// One request for the runner's whole life: the mint. GitHub deleted
	// the ephemeral runner itself after the job.
	inst, _ := w.reg.Requests()
	if inst-inst0 != 1 {
		t.Fatalf("%d installation requests for one runner lifecycle, want 1 (the mint)", inst-inst0)
	}
}

// A fleet runner deregistered without a completed job (its VM idled out
// in the agent) is removed from GitHub after the done grace.
func TestDeregisteredWithoutJobRemoved(t *testing.T) {
	w := newWorld(t, worldOpts{tpms: true, noRecovery: true, pool: func(p *PoolConfig) { p.MinIdle = 1 }})
	w.fleet.Schedule(w.ctx)
	vm := w.vms(jobgate.VMLaunching)[0]
	ag, err := w.boot(w.prov.vm(vm.Name), vm.Name)
	if err != nil {
		t.Fatal(err)
	}
	if resp := w.deregister(ag, "failed"); resp.Removed {
		t.Fatalf("%+v", resp)
	}
	w.fleet.Reconcile(w.ctx)
	if _, ok := w.gh.Runner(ag.resp.RunnerName); !ok {
		t.Fatal("removed within the grace")
	}
	w.clock.Add(doneGrace + time.Second)
	w.fleet.Reconcile(w.ctx)
	if _, ok := w.gh.Runner(ag.resp.RunnerName); ok {
		t.Fatal("a deregistered runner that ran no job is still registered")
	}
	if !w.auditHas("fleet:removed:deregistered_no_job") {
		t.Fatalf("audit: %v", w.audit())
	}
}

// postWebhook sends a delivery to the fleet as GitHub would, with the
// given signature header value ("" signs it correctly).
func (w *world) postWebhook(event, delivery, sig string, body []byte) int {
	w.t.Helper()
	if sig == "" {
		sig = fakegithub.SignWebhook(testSecret, body)
	}
	h := map[string]string{"Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": delivery}
	if sig != "-" {
		h["X-Hub-Signature-256"] = sig
	}
	status, err := w.gh.SendRawWebhook(h, body)
	if err != nil {
		w.t.Fatal(err)
	}
	return status
}

func workflowJob(action string, id int64, labels ...string) []byte {
	b, _ := json.Marshal(map[string]any{
		"action":       action,
		"workflow_job": map[string]any{"id": id, "run_id": id, "labels": labels, "status": action, "created_at": time.Now().UTC()},
		"repository":   map[string]any{"full_name": testRepo},
		"installation": map[string]any{"id": testInstallation},
	})
	return b
}

// Webhooks: only a correct HMAC-SHA256 is acted on (a forged one is
// audited), the body is bounded, a delivery id is processed once, and
// other events and actions are harmless no-ops.
func TestWebhookRejections(t *testing.T) {
	w := newWorld(t, worldOpts{})
	body := workflowJob("queued", 77, poolLabels...)
	forged := fakegithub.SignWebhook([]byte("not-the-secret-at-all"), body)
	for _, tc := range []struct {
		name, event, delivery, sig string
		body                       []byte
		want                       int
	}{
		{"forged signature", "workflow_job", "d-1", forged, body, http.StatusUnauthorized},
		{"no signature", "workflow_job", "d-2", "-", body, http.StatusUnauthorized},
		{"sha1 only", "workflow_job", "d-3", "sha1=" + strings.Repeat("0", 40), body, http.StatusUnauthorized},
		{"signature of another body", "workflow_job", "d-4", fakegithub.SignWebhook(testSecret, []byte("{}")), body, http.StatusUnauthorized},
		{"oversized", "workflow_job", "d-5", "", bytes.Repeat([]byte(" "), maxWebhook+1), http.StatusRequestEntityTooLarge},
		{"no delivery id", "workflow_job", "", "", body, http.StatusBadRequest},
		{"malformed payload", "workflow_job", "d-6", "", []byte(`{"action":`), http.StatusBadRequest},
		{"no job id", "workflow_job", "d-7", "", []byte(`{"action":"queued","workflow_job":{}}`), http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := w.postWebhook(tc.event, tc.delivery, tc.sig, tc.body); got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
		})
	}
	if jobs, _ := w.store.Jobs(w.ctx); len(jobs) != 0 {
		t.Fatalf("refused webhooks recorded jobs: %+v", jobs)
	}
	if !w.auditHas("webhook:rejected:bad_signature") {
		t.Fatalf("forged webhook not audited: %v", w.audit())
	}
	// Harmless: another event, another action; then the real one, twice.
	if got := w.postWebhook("push", "d-8", "", []byte(`{"ref":"refs/heads/main"}`)); got != http.StatusOK {
		t.Fatalf("push event: %d", got)
	}
	if got := w.postWebhook("workflow_job", "d-9", "", workflowJob("waiting", 78, poolLabels...)); got != http.StatusAccepted {
		t.Fatalf("waiting action: %d", got)
	}
	if got := w.postWebhook("workflow_job", "d-10", "", body); got != http.StatusAccepted {
		t.Fatalf("valid webhook: %d", got)
	}
	if got := w.postWebhook("workflow_job", "d-10", "", body); got != http.StatusOK {
		t.Fatalf("duplicate delivery: %d", got)
	}
	if jobs, _ := w.store.Jobs(w.ctx); len(jobs) != 1 || jobs[0].ID != 77 || jobs[0].Pool != "linux" {
		t.Fatalf("jobs: %+v", jobs)
	}
	// A restarted gate still knows the delivery id (the store has it).
	w.fleet.seenIDs = nil
	if got := w.postWebhook("workflow_job", "d-10", "", body); got != http.StatusOK {
		t.Fatalf("duplicate delivery after restart: %d", got)
	}
}

// A webhook storm: every delivery twice, many jobs at once. Each job
// gets one VM: no double launches.
func TestWebhookStorm(t *testing.T) {
	w := newWorld(t, worldOpts{pool: func(p *PoolConfig) { p.MaxTotal, p.LaunchesPerMinute = 20, 100 }})
	w.gh.DuplicateWebhooks(true)
	for range 12 {
		w.queue(poolLabels...)
		w.fleet.Schedule(w.ctx)
	}
	w.fleet.Schedule(w.ctx)
	if n, _, _ := w.prov.counts(); n != 12 {
		t.Fatalf("%d launches for 12 jobs delivered twice each", n)
	}
	if got := w.fleet.metrics.webhooks[[2]string{"workflow_job", "duplicate"}]; got != 12 {
		t.Fatalf("%d duplicates counted, want 12", got)
	}
}

// A lost webhook costs latency, not a stuck job: the reconcile finds the
// delivery in the App's delivery log and acts on it.
func TestLostWebhookRecovered(t *testing.T) {
	w := newWorld(t, worldOpts{pool: func(p *PoolConfig) { p.AdmissionDeadline = jobgate.Duration(time.Hour) }})
	w.gh.DropWebhooks(1)
	w.queue(poolLabels...)
	w.fleet.Schedule(w.ctx)
	if n, _, _ := w.prov.counts(); n != 0 {
		t.Fatalf("%d launches without the webhook", n)
	}
	w.fleet.Reconcile(w.ctx)
	w.fleet.Schedule(w.ctx)
	if n, _, _ := w.prov.counts(); n != 1 {
		t.Fatalf("%d launches after recovery, want 1", n)
	}
	if !w.auditHas("webhook:recovered") {
		t.Fatalf("recovery not audited: %v", w.audit())
	}
	// Recovering again changes nothing; the log is read at most every
	// recoverInterval (5m).
	_, app0 := w.reg.Requests()
	w.fleet.Reconcile(w.ctx)
	if _, app := w.reg.Requests(); app != app0 {
		t.Fatalf("%d App requests within the recover interval", app-app0)
	}
	w.clock.Add(5*time.Minute + time.Second)
	w.fleet.Reconcile(w.ctx)
	w.fleet.Schedule(w.ctx)
	if n, _, _ := w.prov.counts(); n != 1 {
		t.Fatalf("%d launches after a second recovery", n)
	}
}

// Zero zombies: a VM that is not admitted in time, idle past its TTL,
// running past the job limit, vanished, or unknown to the store is
// destroyed and audited; a cancelled job's spare VM is scaled down.
func TestReconcileDestroys(t *testing.T) {
	pool := func(p *PoolConfig) {
		p.AdmissionDeadline, p.IdleTTL, p.JobTimeout = jobgate.Duration(time.Minute), jobgate.Duration(2*time.Minute), jobgate.Duration(5*time.Minute)
	}
	t.Run("admission deadline", func(t *testing.T) {
		w := newWorld(t, worldOpts{pool: pool})
		w.queue(poolLabels...)
		w.fleet.Schedule(w.ctx)
		w.clock.Add(30 * time.Second)
		w.fleet.Reconcile(w.ctx)
		if len(w.vms(jobgate.VMLaunching)) != 1 {
			t.Fatal("destroyed before its deadline")
		}
		w.clock.Add(31 * time.Second)
		w.fleet.Reconcile(w.ctx)
		gone := w.vms(jobgate.VMDestroyed)
		if len(gone) != 1 || !strings.Contains(gone[0].Reason, "not admitted within 1m0s") {
			t.Fatalf("after the deadline: %+v", gone)
		}
		if _, d, alive := w.prov.counts(); d != 1 || alive != 0 {
			t.Fatalf("provider: %d destroyed, %d alive", d, alive)
		}
		if !w.auditHas("fleet:destroyed:vm_launching") {
			t.Fatalf("audit: %v", w.audit())
		}
		// Demand remains: the next pass launches a replacement.
		w.fleet.Schedule(w.ctx)
		if n, _, _ := w.prov.counts(); n != 2 {
			t.Fatalf("%d launches, want a replacement", n)
		}
	})
	t.Run("unknown VM", func(t *testing.T) {
		w := newWorld(t, worldOpts{pool: pool})
		w.prov.addStray("linux-stray")
		w.fleet.Reconcile(w.ctx)
		if _, _, alive := w.prov.counts(); alive != 0 {
			t.Fatal("a VM without a record survived")
		}
		if !w.auditHas("fleet:destroyed:unknown_vm") {
			t.Fatalf("audit: %v", w.audit())
		}
	})
	t.Run("vanished while launching", func(t *testing.T) {
		w := newWorld(t, worldOpts{pool: pool})
		w.queue(poolLabels...)
		w.fleet.Schedule(w.ctx)
		name := w.vms(jobgate.VMLaunching)[0].Name
		w.prov.kill(name)
		w.clock.Add(31 * time.Second)
		w.fleet.Reconcile(w.ctx)
		if vm, _ := w.store.VM(w.ctx, name); vm.State != jobgate.VMDestroyed || !strings.Contains(vm.Reason, "vanished") {
			t.Fatalf("%+v", vm)
		}
	})
	t.Run("cancelled job scales down", func(t *testing.T) {
		w := newWorld(t, worldOpts{pool: pool})
		rec := w.queue(poolLabels...)
		w.fleet.Schedule(w.ctx)
		if err := w.gh.CancelJob(rec.Job.RunID); err != nil {
			t.Fatal(err)
		}
		w.waitDeliveries()
		w.fleet.Reconcile(w.ctx)
		if len(w.vms(jobgate.VMLaunching)) != 1 {
			t.Fatal("scaled down within the grace")
		}
		w.clock.Add(scaleGrace + time.Second)
		w.fleet.Reconcile(w.ctx)
		gone := w.vms(jobgate.VMDestroyed)
		if len(gone) != 1 || !strings.Contains(gone[0].Reason, "scale down") {
			t.Fatalf("after cancel: %+v", gone)
		}
		w.fleet.Schedule(w.ctx)
		if n, _, _ := w.prov.counts(); n != 1 {
			t.Fatalf("%d launches after a cancelled job", n)
		}
	})
	t.Run("minIdle is not scaled down", func(t *testing.T) {
		w := newWorld(t, worldOpts{pool: func(p *PoolConfig) { pool(p); p.MinIdle = 1 }})
		w.fleet.Schedule(w.ctx)
		w.clock.Add(scaleGrace + time.Second)
		w.fleet.Reconcile(w.ctx)
		if len(w.vms(jobgate.VMLaunching)) != 1 {
			t.Fatal("the warm VM was scaled down")
		}
	})
}

// With TPMs: an idle VM past its TTL, a VM running past the job limit and
// a VM killed mid-job are destroyed, and the runner left without a VM is
// removed from GitHub.
func TestReconcileRunnersAndVMs(t *testing.T) {
	pool := func(p *PoolConfig) {
		p.MinIdle, p.IdleTTL, p.JobTimeout, p.LaunchesPerMinute = 1, jobgate.Duration(2*time.Minute), jobgate.Duration(5*time.Minute), 60
	}
	admitted := func(w *world) (*jobgate.VM, *agent) {
		w.fleet.Schedule(w.ctx)
		vm := w.vms(jobgate.VMLaunching)[0]
		ag, err := w.boot(w.prov.vm(vm.Name), vm.Name)
		if err != nil {
			t.Fatal(err)
		}
		return &vm, ag
	}
	t.Run("idle TTL", func(t *testing.T) {
		w := newWorld(t, worldOpts{tpms: true, pool: pool, noRecovery: true})
		vm, ag := admitted(w)
		w.clock.Add(2*time.Minute + time.Second)
		w.fleet.Reconcile(w.ctx)
		if got, _ := w.store.VM(w.ctx, vm.Name); got.State != jobgate.VMDestroyed || !strings.Contains(got.Reason, "idle") {
			t.Fatalf("%+v", got)
		}
		if _, ok := w.gh.Runner(ag.resp.RunnerName); ok {
			t.Fatal("the idle VM's runner is still registered at GitHub")
		}
	})
	t.Run("killed mid-job", func(t *testing.T) {
		w := newWorld(t, worldOpts{tpms: true, pool: pool, noRecovery: true})
		w.queue(poolLabels...)
		vm, ag := admitted(w)
		w.runJob(ag, true)
		w.prov.kill(vm.Name)
		w.fleet.Reconcile(w.ctx)
		if got, _ := w.store.VM(w.ctx, vm.Name); got.State != jobgate.VMDestroyed || !strings.Contains(got.Reason, "vanished") {
			t.Fatalf("%+v", got)
		}
		// GitHub refuses to delete a busy runner until it gives the job
		// up (the fake's lease); the reconcile keeps trying.
		w.eventually("the lost job failed", func() bool {
			for _, j := range w.gh.Jobs() {
				if j.Result == fakegithub.ResultFailed {
					return true
				}
			}
			return false
		})
		w.fleet.Reconcile(w.ctx) // busy: not asked again until the job ends
		w.fleet.Reconcile(w.ctx)
		w.waitDeliveries() // the failed job's completed webhook frees it
		w.fleet.Reconcile(w.ctx)
		if _, ok := w.gh.Runner(ag.resp.RunnerName); ok {
			t.Fatal("a runner without a VM is still registered at GitHub")
		}
		if !w.auditHas("fleet:removed:runner_without_vm") {
			t.Fatalf("audit: %v", w.audit())
		}
		deletes := 0
		for _, c := range w.gh.Calls() {
			if c.Method == http.MethodDelete && strings.Contains(c.Path, "/actions/runners/") {
				deletes++
			}
		}
		if deletes != 2 {
			t.Fatalf("%d DELETE requests for the runner, want 2 (refused while busy, then removed)", deletes)
		}
	})
	t.Run("job timeout", func(t *testing.T) {
		w := newWorld(t, worldOpts{tpms: true, pool: pool, noRecovery: true})
		w.queue(poolLabels...)
		vm, ag := admitted(w)
		w.runJob(ag, true)
		w.clock.Add(5*time.Minute + time.Second)
		w.fleet.Reconcile(w.ctx)
		if got, _ := w.store.VM(w.ctx, vm.Name); got.State != jobgate.VMDestroyed || !strings.Contains(got.Reason, "job exceeded") {
			t.Fatalf("%+v", got)
		}
	})
}

// A provider that fails to launch leaves a destroyed record, an audit
// record and nothing running.
func TestLaunchFailure(t *testing.T) {
	w := newWorld(t, worldOpts{})
	w.prov.failNext = errors.New("quota exceeded")
	w.queue(poolLabels...)
	w.fleet.Schedule(w.ctx)
	gone := w.vms(jobgate.VMDestroyed)
	if len(gone) != 1 || !strings.Contains(gone[0].Reason, "quota exceeded") {
		t.Fatalf("%+v", gone)
	}
	if !w.auditHas("launch:failed:provider") {
		t.Fatalf("audit: %v", w.audit())
	}
	w.fleet.Schedule(w.ctx)
	if n, _, _ := w.prov.counts(); n != 1 {
		t.Fatalf("%d launches after the failure, want a retry", n)
	}
}

// Status and the Prometheus metrics report the pools.
func TestStatusAndMetrics(t *testing.T) {
	w := newWorld(t, worldOpts{pool: func(p *PoolConfig) { p.MinIdle = 1 }})
	w.queue(poolLabels...)
	w.fleet.Schedule(w.ctx)
	st, err := w.fleet.Status(w.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pools) != 1 || st.Pools[0].VMs["launching"] != 2 || st.Pools[0].Queued != 1 || len(st.Pools[0].List) != 2 {
		t.Fatalf("status: %+v", st)
	}
	if st.GitHubRequests == nil {
		t.Fatalf("request counts: %+v", st.GitHubRequests)
	}
	rec := httptest.NewRecorder()
	w.fleet.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`jobgate_fleet_launching_vms{pool="linux"} 2`, `jobgate_fleet_assigned_jobs{pool="linux"} 1`,
		`jobgate_fleet_idle_runners{pool="linux"} 0`, `jobgate_fleet_webhooks_total{event="workflow_job",result="accepted"} 1`,
		`jobgate_fleet_job_startup_duration_seconds_count{pool="linux"} 0`, `jobgate_fleet_launch_to_admitted_seconds_bucket{pool="linux",le="+Inf"} 0`,
		`jobgate_fleet_github_requests_total{auth="installation"}`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, rec.Body.String())
		}
	}
}

// A job that never arrives (a queued webhook for a job GitHub gives to no
// runner of ours) costs one VM for one idle TTL, audited, and is not
// launched for again.
func TestJobNeverArrives(t *testing.T) {
	w := newWorld(t, worldOpts{tpms: true, noRecovery: true, pool: func(p *PoolConfig) { p.IdleTTL = jobgate.Duration(time.Minute) }})
	if got := w.postWebhook("workflow_job", "ghost-1", "", workflowJob("queued", 4242, poolLabels...)); got != http.StatusAccepted {
		t.Fatalf("webhook: %d", got)
	}
	w.fleet.Schedule(w.ctx)
	vm := w.vms(jobgate.VMLaunching)[0]
	w.clock.Add(time.Second)
	if _, err := w.boot(w.prov.vm(vm.Name), vm.Name); err != nil {
		t.Fatal(err)
	}
	w.clock.Add(time.Minute + time.Second)
	w.fleet.Reconcile(w.ctx)
	if got, _ := w.store.VM(w.ctx, vm.Name); got.State != jobgate.VMDestroyed {
		t.Fatalf("%+v", got)
	}
	if !w.auditHas("fleet:abandoned:job_never_arrived") {
		t.Fatalf("audit: %v", w.audit())
	}
	w.fleet.Schedule(w.ctx)
	if n, _, _ := w.prov.counts(); n != 1 {
		t.Fatalf("%d launches for a job that never arrives", n)
	}
	// The agent's own idle TTL does the same: its deregistration says
	// "idle".
	if got := w.postWebhook("workflow_job", "ghost-3", "", workflowJob("queued", 4343, poolLabels...)); got != http.StatusAccepted {
		t.Fatalf("webhook: %d", got)
	}
	w.fleet.Schedule(w.ctx)
	vm2 := w.vms(jobgate.VMLaunching)[0]
	w.clock.Add(time.Second)
	ag2, err := w.boot(w.prov.vm(vm2.Name), vm2.Name)
	if err != nil {
		t.Fatal(err)
	}
	w.deregister(ag2, "idle")
	w.fleet.Schedule(w.ctx)
	if n, _, _ := w.prov.counts(); n != 2 {
		t.Fatalf("%d launches after an idle agent", n)
	}
	// If it does start after all, it is recorded.
	if got := w.postWebhook("workflow_job", "ghost-2", "", workflowJob("in_progress", 4242, poolLabels...)); got != http.StatusAccepted {
		t.Fatalf("webhook: %d", got)
	}
	if j := jobByID(t, w, 4242); j.State != jobgate.JobInProgress {
		t.Fatalf("%+v", j)
	}
	if j := jobByID(t, w, 4343); j.State != jobgate.JobAbandoned {
		t.Fatalf("%+v", j)
	}
}

func jobByID(t *testing.T, w *world, id int64) jobgate.QueuedJob {
	t.Helper()
	jobs, err := w.store.Jobs(w.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.ID == id {
			return j
		}
	}
	t.Fatalf("no job %d", id)
	return jobgate.QueuedJob{}
}
