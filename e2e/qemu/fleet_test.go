package qemu_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/e2e/harness"
	"github.com/attested-runner/attested-runner/internal/qemutest"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/fleet"
)

// fleetGate is a real `jobgate serve` with a fleet section, in front of the
// fake GitHub, launching real QEMU VMs of the test image.
type fleetGate struct {
	t        *testing.T
	bin      string
	cfgPath  string
	addr     string
	metrics  string
	gh       *fakegithub.Server
	ghAddr   string
	stateDir string
	secret   []byte
	cmd      *exec.Cmd
	exited   chan struct{}
	log      *harness.LogBuffer
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startFleetGate writes the admin's files (App key, gate key, webhook
// secret, image signer, gate.json with a fleet of two pools: "cold" with no
// warm VMs and "warm" with one) and starts the gate binary.
func startFleetGate(t *testing.T, f *fixture) *fleetGate {
	t.Helper()
	appKey := testAppKey(t)
	gh, err := fakegithub.New(fakegithub.Options{
		AppID: 7, AppPublicKey: &appKey.PublicKey, InstallationID: 8, Org: org, Repos: []string{repo},
		JobLease: 30 * time.Second, PublicURL: fmt.Sprintf("http://%s:%d", guestHost, guestGitHubPort),
	})
	if err != nil {
		t.Fatal(err)
	}
	g := &fleetGate{t: t, gh: gh, ghAddr: serve(t, gh), log: &harness.LogBuffer{}, secret: []byte("fleet-webhook-secret-0123456789")}
	dir := t.TempDir()
	write := gateFiles(t, dir)
	write("webhook-secret", append(g.secret, '\n'), 0o600)
	write("image.sigstore.json", f.imageProvenance, 0o644)
	write("image-signer.pem", f.imageSigner, 0o644)

	port := freePort(t)
	g.addr = fmt.Sprintf("127.0.0.1:%d", port)
	g.metrics = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	g.stateDir = filepath.Join(dir, "vms")
	qemu := map[string]any{
		"stateDir": g.stateDir, "memoryMiB": memoryMiB, "cpus": 1, "accel": "auto", "network": "restricted",
		"forwards": []string{
			fmt.Sprintf("%s:%d=%s", guestHost, guestGatePort, g.addr),
			fmt.Sprintf("%s:%d=%s", guestHost, guestGitHubPort, g.ghAddr),
		},
	}
	pool := func(name string, minIdle, maxTotal int) map[string]any {
		return map[string]any{
			"name": name, "labels": []string{"attested", name},
			"image":   map[string]any{"dir": f.dir, "provenance": "image.sigstore.json"},
			"minIdle": minIdle, "maxTotal": maxTotal, "launchesPerMinute": 30,
			"idleTTL": "90s", "admissionDeadline": "4m", "jobTimeout": "10m",
			"qemu": qemu,
		}
	}
	warm := pool("warm", 1, 1)
	warm["idleTTL"] = "20m"
	cfg := map[string]any{
		"listen": g.addr, "gateId": "https://gate.qemu.test", "builderId": "https://gate.qemu.test/builder/v1",
		"dataDir": "data", "signingKey": "signing.pem",
		"github": map[string]any{
			"apiUrl": "http://" + g.ghAddr + "/", "appId": 7, "installationId": 8, "privateKey": "app.pem",
			"org": org, "labels": []string{"self-hosted", "attested"},
		},
		"policy": map[string]any{"imageSigners": []string{"image-signer.pem"}, "directKernelBoot": true},
		"fleet": map[string]any{
			"webhookSecret": "webhook-secret", "metricsListen": g.metrics, "reconcileInterval": "5s",
			"pools": []any{pool("cold", 0, 3), warm},
		},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	g.cfgPath = write("gate.json", b, 0o600)
	t.Logf("gate configuration:\n%s", b)

	g.bin = filepath.Join(dir, "jobgate")
	build := exec.Command("go", "build", "-o", g.bin, "./cmd/jobgate")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building jobgate: %v\n%s", err, out)
	}
	g.cmd = exec.Command(g.bin, "serve", "--config", g.cfgPath)
	g.cmd.Stdout, g.cmd.Stderr = g.log, g.log
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g.exited = make(chan struct{})
	go func() { g.cmd.Wait(); close(g.exited) }()
	t.Cleanup(func() {
		g.cmd.Process.Signal(syscall.SIGTERM)
		<-g.exited
		if t.Failed() {
			t.Logf("gate log:\n%s", g.log.String())
			for _, c := range g.consoles() {
				t.Logf("%s", c)
			}
		}
	})
	g.eventually("the gate serves", 60*time.Second, func() bool {
		resp, err := http.Get("http://" + g.addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	gh.SetWebhook("http://"+g.addr+"/v1/github/webhook", g.secret)
	return g
}

// consoles returns the tail of each VM's console (for a failure's log).
func (g *fleetGate) consoles() []string {
	var out []string
	logs, _ := filepath.Glob(filepath.Join(g.stateDir, "*", "console.log"))
	for _, p := range logs {
		b, _ := os.ReadFile(p)
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		out = append(out, fmt.Sprintf("console of %s (tail):\n%s", filepath.Base(filepath.Dir(p)), b))
	}
	return out
}

func (g *fleetGate) eventually(what string, limit time.Duration, ok func() bool) {
	g.t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		select {
		case <-g.exited:
			g.t.Fatalf("the gate exited while waiting for %s:\n%s", what, g.log.String())
		default:
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// status runs `jobgate fleet status --json`, as an admin would.
func (g *fleetGate) status() *fleet.Status {
	g.t.Helper()
	out, err := exec.Command(g.bin, "fleet", "status", "--json", "--config", g.cfgPath).Output()
	if err != nil {
		g.t.Fatalf("jobgate fleet status: %v", err)
	}
	var st fleet.Status
	if err := json.Unmarshal(out, &st); err != nil {
		g.t.Fatalf("fleet status: %v\n%s", err, out)
	}
	return &st
}

func (g *fleetGate) pool(name string) fleet.PoolStatus {
	for _, p := range g.status().Pools {
		if p.Name == name {
			return p
		}
	}
	g.t.Fatalf("no pool %s", name)
	return fleet.PoolStatus{}
}

// audit runs `jobgate audit show`.
func (g *fleetGate) audit() []jobgate.AuditRecord {
	g.t.Helper()
	out, err := exec.Command(g.bin, "audit", "show", "--config", g.cfgPath).Output()
	if err != nil {
		g.t.Fatalf("jobgate audit show: %v", err)
	}
	var recs []jobgate.AuditRecord
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var r jobgate.AuditRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			g.t.Fatalf("audit line: %v", err)
		}
		recs = append(recs, r)
	}
	return recs
}

func (g *fleetGate) audited(action, result, reason string) []jobgate.AuditRecord {
	var out []jobgate.AuditRecord
	for _, r := range g.audit() {
		if r.Action == action && r.Result == result && (reason == "" || r.Reason == reason) {
			out = append(out, r)
		}
	}
	return out
}

// qemuPids returns the fleet's running QEMU processes by VM name.
func (g *fleetGate) qemuPids() map[string]int {
	out := map[string]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte(g.stateDir)) || !bytes.HasPrefix(b, []byte("qemu-system")) {
			continue
		}
		for _, arg := range bytes.Split(b, []byte{0}) {
			if name, ok := strings.CutPrefix(string(arg), "name=opt/attested-runner/vm,string="); ok {
				out[name] = pid
			}
		}
	}
	return out
}

func fleetJob(runID int64, pool string, steps ...fakegithub.Step) fakegithub.Job {
	if len(steps) == 0 {
		steps = []fakegithub.Step{{Name: "build", Run: "echo built on $(hostname)"}}
	}
	return fakegithub.Job{
		Repository: repo, Ref: "refs/heads/main", SHA: strings.Repeat("ab", 20),
		WorkflowRef: repo + "/.github/workflows/ci.yml@refs/heads/main", WorkflowSHA: strings.Repeat("ab", 20),
		EventName: "push", Actor: "octocat", RunID: runID, RunAttempt: 1, RunNumber: 1, Job: "build",
		Labels: []string{"self-hosted", "attested", pool}, Steps: steps,
	}
}

func (g *fleetGate) waitJob(runID int64, limit time.Duration, done bool) fakegithub.JobRecord {
	g.t.Helper()
	var rec fakegithub.JobRecord
	g.eventually(fmt.Sprintf("job %d %s", runID, map[bool]string{true: "to finish", false: "to start"}[done]), limit, func() bool {
		var ok bool
		rec, ok = g.gh.JobResult(runID)
		if !ok {
			return false
		}
		if done {
			return rec.Result != ""
		}
		return !rec.AcquiredAt.IsZero()
	})
	return rec
}

// TestFleet is the fleet end to end on this machine: a real gate with a
// fleet of two pools boots real QEMU VMs (TCG) of the test image, each
// with its own swtpm, for jobs that the fake GitHub announces with signed
// workflow_job webhooks (every one delivered twice). It covers a job from
// the warm pool and a cold one (and measures queued-to-started for both),
// a cancelled job, a job that never arrives, a VM killed mid-job and a
// forged webhook, and ends with zero zombies either way: no VM without a
// live purpose, no runner registration without a VM.
func TestFleet(t *testing.T) {
	f := getFixture(t)
	defer qemutest.LockBoots(t)()
	start := time.Now()
	g := startFleetGate(t, f)
	g.gh.DuplicateWebhooks(true)

	// A forged webhook is refused and audited, and launches nothing.
	body, _ := json.Marshal(map[string]any{"action": "queued", "workflow_job": map[string]any{"id": 1, "labels": []string{"self-hosted", "attested", "cold"}}})
	status, err := g.gh.SendRawWebhook(map[string]string{"X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "forged-1",
		"Content-Type": "application/json", "X-Hub-Signature-256": fakegithub.SignWebhook([]byte("guessed-secret"), body)}, body)
	if err != nil || status != http.StatusUnauthorized {
		t.Fatalf("forged webhook: status %d, %v", status, err)
	}

	// The warm pool fills itself: one VM, launched, verified, admitted.
	g.eventually("the warm VM admitted", 5*time.Minute, func() bool { return g.pool("warm").VMs["admitted"] == 1 })
	t.Logf("warm VM admitted %.0f s after the gate started", time.Since(start).Seconds())

	// A job for the warm pool starts on the waiting VM.
	g.gh.QueueJob(fleetJob(1001, "warm"))
	warm := g.waitJob(1001, 3*time.Minute, true)
	if warm.Result != fakegithub.ResultSucceeded {
		t.Fatalf("warm job: %+v", warm)
	}
	warmStart := warm.AcquiredAt.Sub(warm.QueuedAt)

	// The warm pool refills; then a cold job: no VM waits for it.
	g.eventually("the warm pool refilled", 5*time.Minute, func() bool { return g.pool("warm").VMs["admitted"] == 1 })
	g.gh.QueueJob(fleetJob(1002, "cold"))
	cold := g.waitJob(1002, 5*time.Minute, true)
	if cold.Result != fakegithub.ResultSucceeded {
		t.Fatalf("cold job: %+v", cold)
	}
	coldStart := cold.AcquiredAt.Sub(cold.QueuedAt)
	t.Logf("queued -> job started: warm pool %.1f s, cold (TCG boot) %.1f s", warmStart.Seconds(), coldStart.Seconds())

	// A job cancelled while its VM boots: the VM is scaled down.
	g.gh.QueueJob(fleetJob(1003, "cold"))
	g.eventually("a VM launched for job 1003", time.Minute, func() bool { return g.pool("cold").VMs["launching"] == 1 })
	if err := g.gh.CancelJob(1003); err != nil {
		t.Fatal(err)
	}
	g.eventually("the cancelled job's VM scaled down", 2*time.Minute, func() bool {
		for _, r := range g.audited("fleet", "destroyed", "") {
			if strings.Contains(r.Detail, "scale down") {
				return true
			}
		}
		return false
	})

	// At once: a job whose VM is killed mid-job, and a job that never
	// arrives (a validly signed webhook for a job GitHub never hands out).
	g.gh.QueueJob(fleetJob(1004, "cold", fakegithub.Step{Name: "long", Run: "sleep 600"}))
	ghost, _ := json.Marshal(map[string]any{"action": "queued", "workflow_job": map[string]any{"id": 999999, "run_id": 999999,
		"labels": []string{"self-hosted", "attested", "cold"}, "status": "queued", "created_at": time.Now().UTC()},
		"repository": map[string]any{"full_name": repo}, "installation": map[string]any{"id": 8}})
	status, err = g.gh.SendRawWebhook(map[string]string{"X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "ghost-1",
		"Content-Type": "application/json", "X-Hub-Signature-256": fakegithub.SignWebhook(g.secret, ghost)}, ghost)
	if err != nil || status != http.StatusAccepted {
		t.Fatalf("ghost webhook: status %d, %v", status, err)
	}
	long := g.waitJob(1004, 5*time.Minute, false)
	var victim string
	for _, p := range g.status().Pools {
		for _, vm := range p.List {
			if vm.Runner == long.RunnerName {
				victim = vm.Name
			}
		}
	}
	pid := g.qemuPids()[victim]
	if victim == "" || pid == 0 {
		t.Fatalf("no QEMU for the VM of runner %s (VMs %v)", long.RunnerName, g.qemuPids())
	}
	syscall.Kill(pid, syscall.SIGKILL)
	t.Logf("killed VM %s (QEMU pid %d) running job 1004", victim, pid)

	// Everything settles: the killed job fails when its lease runs out,
	// the runner without a VM is removed, the cancelled job's VM is scaled
	// down, the ghost job's VM idles out and the job is abandoned.
	g.eventually("the fleet settles", 6*time.Minute, func() bool {
		st := g.status()
		for _, p := range st.Pools {
			want := map[string]int{"cold": 0, "warm": 1}[p.Name]
			if p.VMs["launching"]+p.VMs["busy"]+p.VMs["done"] != 0 || p.VMs["admitted"] != want || p.Queued != 0 {
				return false
			}
		}
		res, _ := g.gh.JobResult(1004)
		return res.Result == fakegithub.ResultFailed && len(g.gh.Runners()) == 1
	})

	// Zero zombies, both ways: one QEMU (the warm VM) and one registration
	// (its runner), the same VM.
	pids := g.qemuPids()
	st := g.pool("warm")
	if len(pids) != 1 || len(st.List) != 1 || pids[st.List[0].Name] == 0 {
		t.Fatalf("QEMU processes %v, warm pool %+v", pids, st.List)
	}
	if rs := g.gh.Runners(); len(rs) != 1 || rs[0].Name != st.List[0].Runner {
		t.Fatalf("GitHub runners %+v, want only the warm VM's %s", rs, st.List[0].Runner)
	}
	for reason, what := range map[string][3]string{
		"forged webhook":         {"webhook", "rejected", "bad_signature"},
		"image verified":         {"launch", "verified", ""},
		"cancelled: scaled down": {"fleet", "destroyed", ""},
		"killed: runner removed": {"fleet", "removed", "runner_without_vm"},
		"never arrives":          {"fleet", "abandoned", "job_never_arrived"},
		"ephemeral runner gone":  {"fleet", "gone", "ephemeral"},
	} {
		if len(g.audited(what[0], what[1], what[2])) == 0 {
			t.Errorf("audit has no %v (%s)", what, reason)
		}
	}

	// No double launches though every webhook came twice: the cold pool
	// launched one VM per job (1002, 1003, 1004, the ghost); the warm pool
	// one per refill.
	verified := g.audited("launch", "verified", "")
	launches, coldLaunches := len(verified), 0
	for _, r := range verified {
		if strings.HasPrefix(r.Detail, "pool cold,") {
			coldLaunches++
		}
	}
	// A launch the provider failed (and the fleet retried) started no VM.
	for _, r := range g.audited("launch", "failed", "provider") {
		t.Logf("launch failed and retried: %s", r.Detail)
		if strings.HasPrefix(r.Detail, "VM cold-") {
			coldLaunches--
		}
	}
	admitted := len(g.audited("admit", "accepted", ""))
	if coldLaunches != 4 {
		t.Errorf("%d cold launches for 4 cold jobs", coldLaunches)
	}
	metrics := httpGet(t, "http://"+g.metrics+"/metrics")
	dups, _ := metric(metrics, `jobgate_fleet_webhooks_total{event="workflow_job",result="duplicate"}`)
	if dups == 0 {
		t.Errorf("no duplicate deliveries counted:\n%s", metrics)
	}
	final := g.status()
	inst, app := final.GitHubRequests.Installation, final.GitHubRequests.App
	t.Logf("fleet: %d launches, %d admitted runners, %.0f duplicate deliveries ignored, %.0f s in all", launches, admitted, dups, time.Since(start).Seconds())
	t.Logf("GitHub requests: %d installation (%.2f per runner lifecycle), %d as the App (tokens, webhook delivery log)",
		inst, float64(inst)/float64(max(admitted, 1)), app)
	byKind := map[string]int{}
	for _, c := range g.gh.Calls() {
		kind := c.Method + " " + c.Path
		switch {
		case strings.HasSuffix(c.Path, "/generate-jitconfig"):
			kind = "POST generate-jitconfig"
		case c.Method == http.MethodDelete && strings.Contains(c.Path, "/actions/runners/"):
			kind = fmt.Sprintf("DELETE runner (%d)", c.Status)
		case strings.HasSuffix(c.Path, "/actions/runners"):
			kind = "GET runners"
		case strings.HasPrefix(c.Path, "/app/hook/deliveries/"):
			kind = "GET delivery"
		case strings.HasPrefix(c.Path, "/_fake/"):
			continue // the runners' own protocol, not the gate's
		}
		byKind[kind]++
	}
	t.Logf("GitHub requests by kind: %v", byKind)
	if mints := byKind["POST generate-jitconfig"]; mints != admitted {
		t.Errorf("%d mints for %d admitted runners", mints, admitted)
	}
	for _, name := range []string{"jobgate_fleet_launch_to_admitted_seconds_sum", "jobgate_fleet_launch_to_admitted_seconds_count"} {
		for _, pool := range []string{"cold", "warm"} {
			v, _ := metric(metrics, name+`{pool="`+pool+`"}`)
			t.Logf("  %s{pool=%q} %.1f", name, pool, v)
		}
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return b.String()
}
