package fleet

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/internal/fakeclock"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
	"github.com/attested-runner/attested-runner/provenance"
)

// The fleet's tests run the real gate, store and fleet against the fake
// GitHub (which sends signed webhooks to the fleet and counts requests),
// with an in-memory provider whose "VMs" are swtpm TPMs: booting one runs
// the agent's admission on its TPM, naming the VM.

const (
	testOrg          = "octo-org"
	testRepo         = "octo-org/app"
	testAppID        = 1001
	testInstallation = 2002
)

var testSecret = []byte("webhook-secret-0123456789")

// memProvider runs "VMs" in memory; with tpms set each has a swtpm whose
// AK it reports, as the qemu provider does.
type memProvider struct {
	t    testing.TB
	tpms bool

	mu        sync.Mutex
	vms       map[string]*memVM
	launches  []string
	destroyed []string
	failNext  error
	listErr   error
	// destroyErr, if set, fails every Destroy.
	destroyErr error
}

type memVM struct {
	name string
	req  *LaunchRequest
	tpm  *attesttest.SWTPM
	ak   crypto.PublicKey
	// agent is the collector of the VM's last boot.
	agent *attest.TPMCollector
	conn  io.Closer
}

func (m *memProvider) Kind() string { return "mem" }

func (m *memProvider) Launch(ctx context.Context, req *LaunchRequest) (*Launched, error) {
	m.mu.Lock()
	if err := m.failNext; err != nil {
		m.failNext = nil
		m.mu.Unlock()
		return nil, err
	}
	m.mu.Unlock()
	vm := &memVM{name: req.Name, req: req}
	if m.tpms {
		tpm, err := attesttest.BootSWTPM(ctx, m.t.TempDir(), nil)
		if err != nil {
			return nil, err
		}
		m.t.Cleanup(func() { tpm.Stop() })
		var spki []byte
		if err := tpm.With(func(rw io.ReadWriter) (err error) { spki, err = attest.AKPublic(rw); return err }); err != nil {
			return nil, err
		}
		if vm.ak, err = x509.ParsePKIXPublicKey(spki); err != nil {
			return nil, err
		}
		vm.tpm = tpm
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.vms == nil {
		m.vms = map[string]*memVM{}
	}
	m.vms[req.Name] = vm
	m.launches = append(m.launches, req.Name)
	return &Launched{AK: vm.ak}, nil
}

func (m *memProvider) Destroy(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.destroyErr != nil {
		return m.destroyErr
	}
	if vm := m.vms[name]; vm != nil {
		if vm.tpm != nil {
			vm.tpm.Stop()
		}
		delete(m.vms, name)
		m.destroyed = append(m.destroyed, name)
	}
	return nil
}

func (m *memProvider) List(context.Context) ([]Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.listErr != nil {
		return nil, m.listErr
	}
	var out []Instance
	for name := range m.vms {
		out = append(out, Instance{Name: name, Running: true})
	}
	return out, nil
}

// kill makes a VM vanish without the fleet's doing (a crash, an admin).
func (m *memProvider) kill(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if vm := m.vms[name]; vm != nil && vm.tpm != nil {
		vm.tpm.Stop()
	}
	delete(m.vms, name)
}

// addStray makes the provider list a VM the fleet never launched.
func (m *memProvider) addStray(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.vms == nil {
		m.vms = map[string]*memVM{}
	}
	m.vms[name] = &memVM{name: name}
}

func (m *memProvider) vm(name string) *memVM {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.vms[name]
}

func (m *memProvider) counts() (launches, destroyed, alive int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.launches), len(m.destroyed), len(m.vms)
}

// image is a pool image on disk with its signed provenance.
type image struct {
	dir, provenance string
	signer          crypto.PublicKey
	rv              *attest.ReferenceValues
}

// reference computes the reference image of a swtpm booted with the test
// boot log and the test agent (what every memProvider VM measures).
func reference(t testing.TB) *attest.ReferenceValues {
	t.Helper()
	tpm, err := attesttest.BootSWTPM(context.Background(), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Stop()
	var im attest.Image
	if err := tpm.With(func(rw io.ReadWriter) (err error) { im, err = attesttest.ReferenceImage(rw, "runner-test"); return err }); err != nil {
		t.Fatal(err)
	}
	return &attest.ReferenceValues{Format: attest.ReferenceValuesFormat, Images: []attest.Image{im},
		AgentDigests: []attest.Hex{attesttest.AgentDigest[:]}}
}

// newImage writes an image directory and signs its provenance.
func newImage(t testing.TB, rv *attest.ReferenceValues) *image {
	t.Helper()
	dir := t.TempDir()
	files := map[string][]byte{"vmlinuz": []byte("kernel bytes"), "initrd.img": []byte("initrd bytes"), "cmdline": []byte("console=ttyS0\n")}
	var subjects []provenance.Subject
	for _, name := range []string{"vmlinuz", "initrd.img", "cmdline"} {
		if err := os.WriteFile(filepath.Join(dir, name), files[name], 0o644); err != nil {
			t.Fatal(err)
		}
		d := sha256.Sum256(files[name])
		subjects = append(subjects, provenance.Subject{Name: name, SHA256: d[:]})
	}
	rvJSON, _ := json.Marshal(rv)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now().UTC()
	bundle, err := provenance.SignImage(context.Background(), &provenance.ImageBuild{
		BuilderID: "https://image-builder.test", Subjects: subjects, Parameters: json.RawMessage(`{"boot":"qemu-direct"}`),
		ReferenceValues: rvJSON, StartedOn: now, FinishedOn: now,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	prov := filepath.Join(t.TempDir(), "image.sigstore.json")
	if err := os.WriteFile(prov, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	return &image{dir: dir, provenance: prov, signer: key.Public(), rv: rv}
}

// world is a gate with a fleet of one pool ("linux") on a memProvider.
type world struct {
	t     *testing.T
	ctx   context.Context
	clock *fakeclock.Clock
	gh    *fakegithub.Server
	reg   *jobgate.GitHubRegistry
	store jobgate.Store
	// faults is the store the gate (and so the fleet) uses: store, with
	// the faults a test sets.
	faults *faultyStore
	gate   *jobgate.Gate
	fleet  *Fleet
	prov   *memProvider
	img    *image
	srv    *httptest.Server
	cfg    *Config
	runID  int64
}

type worldOpts struct {
	tpms bool
	pool func(*PoolConfig)
	// noRecovery turns off recovering missed deliveries.
	noRecovery bool
	// store opens the gate's store (default: bbolt in a temporary
	// directory).
	store func(t *testing.T) jobgate.Store
}

func newWorld(t *testing.T, o worldOpts) *world {
	t.Helper()
	ctx := context.Background()
	w := &world{t: t, ctx: ctx, clock: fakeclock.New(time.Now().UTC().Truncate(time.Second)), runID: 100}
	appKey, pemKey, err := fakegithub.AppKey()
	if err != nil {
		t.Fatal(err)
	}
	gh, err := fakegithub.Start(fakegithub.Options{AppID: testAppID, AppPublicKey: &appKey.PublicKey, InstallationID: testInstallation,
		Org: testOrg, Repos: []string{testRepo}, JobLease: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gh.Close() })
	w.gh = gh
	w.reg, err = jobgate.NewGitHubRegistry(jobgate.GitHubOptions{APIURL: gh.URL() + "/", AppID: testAppID, InstallationID: testInstallation,
		PrivateKey: pemKey, Org: testOrg, MaxRateLimit: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rv := reference(t)
	w.img = newImage(t, rv)
	recover := !o.noRecovery
	w.cfg = &Config{WebhookSecret: "unused", RecoverDeliveries: &recover, Pools: []PoolConfig{{
		Name: "linux", Labels: []string{"attested", "linux"},
		Image: ImageConfig{Dir: w.img.dir, Provenance: w.img.provenance},
		QEMU:  &QEMUConfig{StateDir: t.TempDir()},
	}}}
	if o.pool != nil {
		o.pool(&w.cfg.Pools[0])
	}
	if err := w.cfg.validate(); err != nil {
		t.Fatal(err)
	}
	if o.store != nil {
		w.store = o.store(t)
	} else {
		bolt, err := jobgate.OpenBoltStore(filepath.Join(t.TempDir(), "gate.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bolt.Close() })
		w.store = bolt
	}
	w.faults = &faultyStore{Store: w.store}
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	w.gate, err = jobgate.New(jobgate.Options{
		Config: &jobgate.Config{GateID: "https://gate.test", BuilderID: "https://gate.test/builder/v1",
			GitHub: jobgate.GitHubConfig{Org: testOrg, Labels: []string{"self-hosted"}}, Fleet: json.RawMessage(`{}`)},
		Store: w.faults, Registry: w.reg, Policy: &attest.Policy{Reference: rv, AllowSoftwareTPMUnsafe: true},
		PolicyDigest: "test", Signer: signer, Now: w.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.prov = &memProvider{t: t, tpms: o.tpms}
	w.fleet, err = New(Options{Config: w.cfg, Gate: w.gate, WebhookSecret: testSecret, ImageSigners: []crypto.PublicKey{w.img.signer},
		Providers: map[string]Provider{"linux": w.prov}, Deliveries: w.reg, Budget: w.reg, Requests: w.reg.Requests, Now: w.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /v1/github/webhook", w.fleet.WebhookHandler())
	mux.Handle("/", w.gate.Handler())
	w.srv = httptest.NewServer(mux)
	t.Cleanup(w.srv.Close)
	gh.SetWebhook(w.srv.URL+"/v1/github/webhook", testSecret)
	return w
}

// queue queues a job with these runs-on labels and waits until the fleet
// has recorded its queued webhook.
func (w *world) queue(labels ...string) fakegithub.JobRecord {
	w.t.Helper()
	w.runID++
	rec, err := w.gh.QueueJob(fakegithub.Job{Repository: testRepo, Ref: "refs/heads/main", SHA: strings.Repeat("ab", 20),
		WorkflowRef: testRepo + "/.github/workflows/ci.yml@refs/heads/main", WorkflowSHA: strings.Repeat("cd", 20), EventName: "push",
		Actor: "octocat", RunID: w.runID, RunAttempt: 1, RunNumber: 1, Job: "build", Labels: labels,
		Steps: []fakegithub.Step{{Run: "true"}}})
	if err != nil {
		w.t.Fatal(err)
	}
	w.waitDeliveries()
	return rec
}

// waitDeliveries waits until the fake has sent every delivery so far.
func (w *world) waitDeliveries() {
	w.t.Helper()
	w.eventually("webhooks delivered", func() bool {
		for _, d := range w.gh.WebhookDeliveries() {
			if !d.Done {
				return false
			}
		}
		return true
	})
}

func (w *world) eventually(what string, ok func() bool) {
	w.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			w.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// vms returns the fleet's VM records by state.
func (w *world) vms(state jobgate.VMState) []jobgate.VM {
	w.t.Helper()
	all, err := w.store.VMs(w.ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	var out []jobgate.VM
	for _, vm := range all {
		if vm.State == state {
			out = append(out, vm)
		}
	}
	return out
}

// agent is a booted VM's agent: its collector (environment keys) and the
// gate's answer.
type agent struct {
	c    *attest.TPMCollector
	resp *gateapi.AdmitResponse
}

// boot runs a VM's agent admission on its TPM, naming vmID (normally the
// VM's own name).
func (w *world) boot(vm *memVM, vmID string) (*agent, error) {
	w.t.Helper()
	if vm.agent != nil {
		// A reboot: the previous agent goes, the TPM power-cycles (fresh
		// PCRs, same AK) and the firmware measures the boot again.
		vm.agent.Close()
		vm.conn.Close()
		if err := vm.tpm.Restart(w.ctx); err != nil {
			w.t.Fatal(err)
		}
		if err := vm.tpm.Replay(nil); err != nil {
			w.t.Fatal(err)
		}
	}
	conn, err := vm.tpm.Dial()
	if err != nil {
		w.t.Fatal(err)
	}
	c, err := attest.NewTPMCollector(conn, attest.TPMOptions{EventLog: func() ([]byte, error) { return attesttest.BootLog(), nil }, SoftwareTPM: true})
	if err != nil {
		w.t.Fatal(err)
	}
	vm.agent, vm.conn = c, conn
	w.t.Cleanup(func() { c.Close() })
	if err := attesttest.BootAgent(c); err != nil {
		w.t.Fatal(err)
	}
	client := &gateapi.Client{BaseURL: w.srv.URL}
	ch, err := client.Challenge(w.ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	ev, err := c.Collect(attest.AdmissionChallenge(ch.Nonce))
	if err != nil {
		w.t.Fatal(err)
	}
	b, _ := ev.Encode()
	resp, err := client.Admit(w.ctx, &gateapi.AdmitRequest{Nonce: ch.Nonce, Evidence: b, VMID: vmID, Labels: []string{"attested", "linux"}})
	if err != nil {
		return nil, err
	}
	return &agent{c: c, resp: resp}, nil
}

// runJob is the VM's runner: it opens the sealed JIT configuration, takes
// a job from the fake GitHub (in_progress webhook) and, unless hold, completes
// it (completed webhook; the fake deletes the ephemeral runner).
func (w *world) runJob(a *agent, hold bool) (*fakegithub.RunnerClient, *fakegithub.AcquiredJob) {
	w.t.Helper()
	jit, err := a.c.HPKE().Open(gateapi.JITContext(a.resp.RunnerName), a.resp.SealedJITConfig)
	if err != nil {
		w.t.Fatal(err)
	}
	cfg, err := fakegithub.DecodeJITConfig(string(jit))
	if err != nil {
		w.t.Fatal(err)
	}
	rc, err := fakegithub.NewRunnerClient(cfg, nil)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := rc.Connect(w.ctx); err != nil {
		w.t.Fatal(err)
	}
	job, err := rc.Acquire(w.ctx, fakegithub.PollParams{})
	if err != nil || job == nil || job.RequestID == 0 {
		w.t.Fatalf("acquire: %+v, %v", job, err)
	}
	if !hold {
		if err := rc.Complete(w.ctx, job.RequestID, fakegithub.ResultSucceeded); err != nil {
			w.t.Fatal(err)
		}
	}
	w.waitDeliveries()
	return rc, job
}

// deregister is the agent's teardown: a deregistration signed with the
// environment key.
func (w *world) deregister(a *agent, outcome string) *gateapi.DeregisterResponse {
	w.t.Helper()
	at := w.clock.Now()
	digest := sha256.Sum256(gateapi.DeregisterMessage(a.resp.RunnerName, outcome, "job done", at))
	sig, err := a.c.Signer().Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		w.t.Fatal(err)
	}
	resp, err := (&gateapi.Client{BaseURL: w.srv.URL}).Deregister(w.ctx, &gateapi.DeregisterRequest{RunnerName: a.resp.RunnerName,
		Outcome: outcome, Reason: "job done", SignedAt: at, Signature: sig})
	if err != nil {
		w.t.Fatal(err)
	}
	return resp
}

// audit returns the audit log as action:result:reason strings.
func (w *world) audit() []string {
	var out []string
	w.store.AuditLog(w.ctx, func(r jobgate.AuditRecord) error {
		out = append(out, r.Action+":"+r.Result+":"+r.Reason)
		return nil
	})
	return out
}

func (w *world) auditHas(want string) bool {
	for _, a := range w.audit() {
		if strings.HasPrefix(a, want) {
			return true
		}
	}
	return false
}

func rejectedCode(err error) string {
	var rej *gateapi.RejectedError
	if errors.As(err, &rej) {
		return rej.Err.Code
	}
	return ""
}

// faultyStore is the gate's store with chosen operations failing (a full
// disk, a lost database).
type faultyStore struct {
	jobgate.Store
	mu sync.Mutex
	// putVM, if set, decides whether PutVM of this VM fails.
	putVM                func(*jobgate.VM) error
	putJob, deliverySeen error
}

func (f *faultyStore) set(fn func(*faultyStore)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *faultyStore) PutVM(ctx context.Context, vm *jobgate.VM, a *jobgate.AuditRecord) error {
	f.mu.Lock()
	fail := f.putVM
	f.mu.Unlock()
	if fail != nil {
		if err := fail(vm); err != nil {
			return err
		}
	}
	return f.Store.PutVM(ctx, vm, a)
}

func (f *faultyStore) PutJob(ctx context.Context, j *jobgate.QueuedJob) error {
	f.mu.Lock()
	err := f.putJob
	f.mu.Unlock()
	if err != nil {
		return err
	}
	return f.Store.PutJob(ctx, j)
}

func (f *faultyStore) DeliverySeen(ctx context.Context, id string) (bool, error) {
	f.mu.Lock()
	err := f.deliverySeen
	f.mu.Unlock()
	if err != nil {
		return false, err
	}
	return f.Store.DeliverySeen(ctx, id)
}
