package qemu_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/internal/qemutest"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/google/go-tpm/legacy/tpm2"
)

// e2eEnv gates this package: `make test-qemu` sets it.
const e2eEnv = "ATTESTED_E2E_QEMU"

// What the image is built for: the guest dials the gate and GitHub at
// guestHost (QEMU user networking; boot.sh --forward relays each
// connection to the host's in-process servers).
const (
	guestHost       = "10.0.2.100"
	guestGatePort   = 8443
	guestGitHubPort = 8080
	// memoryMiB is the guest RAM: a -kernel boot's measured kernel digest
	// depends on it (imageref.QEMUDirect).
	memoryMiB = 512
	// bootTimeout bounds one boot, QEMU start to power-off, under TCG.
	bootTimeout = 60 * time.Second
	org         = "octo-org"
	repo        = "octo-org/app"
)

var repoRoot string

func TestMain(m *testing.M) {
	_, self, _, _ := runtime.Caller(0)
	repoRoot = filepath.Join(filepath.Dir(self), "..", "..")
	code := m.Run()
	if fixRoot != "" {
		os.RemoveAll(fixRoot)
	}
	if gateKeyDir != "" {
		os.RemoveAll(gateKeyDir)
	}
	os.Exit(code)
}

func requireQEMU(t *testing.T) {
	t.Helper()
	if os.Getenv(e2eEnv) != "1" {
		t.Skipf("set %s=1 to boot the runner image with the attested-runner agent under QEMU/OVMF/swtpm (needs qemu-system-x86, ovmf, swtpm, cpio, binutils, apt access or a warm image cache)", e2eEnv)
	}
	for _, tool := range []string{"qemu-system-x86_64", "swtpm", "cpio", "dpkg-deb", "objcopy", "readelf", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s=1 but %s is missing: run scripts/prereqs.sh --qemu", e2eEnv, tool)
		}
	}
}

func script(name string) string { return filepath.Join(repoRoot, "scripts", "image", name) }

func runScript(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// buildArgs are the build.sh arguments of the test image: an agent image for
// the gate at guestHost (plain http through QEMU's relay to the host's
// loopback, hence the named insecure flag) pinning the test gate's key, the
// fake Runner.Listener, and /dev/ttyS1 handed to the runner user so the job
// can export its bundle.
func buildArgs(t *testing.T) []string {
	_, pub := testGateKey(t)
	return []string{
		"--agent", "--gate", fmt.Sprintf("http://%s:%d", guestHost, guestGatePort), "--gate-key", pub,
		"--runner", "fake", "--runner-user", "1000:1000", "--runner-device", "/dev/ttyS1",
		"--agent-flag", "--insecure-allow-plain-http-gate",
		"--agent-flag", "--admission-deadline=40s", "--agent-flag", "--idle-ttl=300s", "--agent-flag", "--teardown-deadline=20s",
	}
}

var (
	gateKeyOnce             sync.Once
	gateKeyDir              string
	gateKeyPriv, gateKeyPub string
	gateKeyErr              error
)

// testGateKey is the gate signing key of every test gate in this package
// (private and public PEM files): the images pin its public half, as an
// admin's images pin their gate's.
func testGateKey(t *testing.T) (priv, pub string) {
	t.Helper()
	gateKeyOnce.Do(func() {
		if gateKeyDir, gateKeyErr = os.MkdirTemp("", "attested-qemu-gate-key"); gateKeyErr != nil {
			return
		}
		gateKeyPriv = filepath.Join(gateKeyDir, "signing.pem")
		gateKeyPub = filepath.Join(gateKeyDir, "gate-key.pub.pem")
		var pem []byte
		if pem, gateKeyErr = jobgate.GenerateSigningKey(gateKeyPriv); gateKeyErr == nil {
			gateKeyErr = os.WriteFile(gateKeyPub, pem, 0o644)
		}
	})
	if gateKeyErr != nil {
		t.Fatalf("test gate key: %v", gateKeyErr)
	}
	return gateKeyPriv, gateKeyPub
}

// machine is one simulated host: a swtpm state directory whose endorsement
// seed, hence attestation key, survives from boot to boot.
type machine struct {
	tpmState string
	akPEM    []byte
}

// enrollTPM creates a swtpm state directory and reads its attestation key
// with swtpm running alone, before any boot, as an admin enrolls a machine
// (`attested-runner ak-public`). The AK is a primary key derived from the
// endorsement seed stored in the directory, so QEMU's swtpm on the same
// directory presents the same key.
func enrollTPM(t *testing.T, dir string) *machine {
	t.Helper()
	state := filepath.Join(dir, "tpm")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	srv, ctrl := filepath.Join(dir, "swtpm.sock"), filepath.Join(dir, "swtpm.ctrl")
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--server", "type=unixio,path="+srv, "--ctrl", "type=unixio,path="+ctrl,
		"--tpmstate", "dir="+state, "--flags", "not-need-init,startup-clear")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
	}
	defer stop()
	var conn net.Conn
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if conn, err = net.Dial("unix", srv); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("swtpm did not start: %v\n%s", err, out.String())
	}
	spki, err := attest.AKPublic(conn)
	if err != nil {
		t.Fatal(err)
	}
	// An orderly shutdown, so swtpm stores its state before it exits.
	if err := tpm2.Shutdown(conn, tpm2.StartupClear); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	stop()
	if _, err := os.Stat(filepath.Join(state, "tpm2-00.permall")); err != nil {
		t.Fatalf("swtpm left no state: %v\n%s", err, out.String())
	}
	return &machine{tpmState: state, akPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki})}
}

// world is the host side: the fake GitHub and a gate in front of it.
type world struct {
	gh      *fakegithub.Server
	ghAddr  string // host address of the fake GitHub
	gate    *jobgate.Gate
	gateURL string // host URL of the gate
	store   *jobgate.BoltStore
	gateKey crypto.PublicKey
	gateLog *bytes.Buffer
	logMu   *sync.Mutex
	config  []byte // the gate configuration file
	policy  *attest.Policy
	// dir holds the gate's files (ak.pem; image.sigstore.json and
	// image-signer.pem when imageProvenance).
	dir             string
	imageProvenance bool
}

// testAppKey is the GitHub App key of every fake GitHub in this package.
func testAppKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, _, err := fakegithub.AppKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// gateSpec is what differs between the gates of the tests.
type gateSpec struct {
	reference *attest.ReferenceValues
	// imageProvenance, with imageSigner (PEM public key), replaces
	// reference: the gate loads the signed image provenance
	// (policy.imageSigners) as an admin deploying a built image would.
	imageProvenance, imageSigner []byte
	directKernelBoot             bool
	// workFolder is the gate's github.workFolder (JIT work_folder).
	workFolder string
}

// newWorld starts the fake GitHub (JIT configs name the guest's address
// for it) and a gate configured from a real configuration file, built the
// way `jobgate serve` builds it.
func newWorld(t *testing.T, m *machine, spec gateSpec) *world {
	t.Helper()
	appKey := testAppKey(t)
	gh, err := fakegithub.New(fakegithub.Options{
		AppID: 7, AppPublicKey: &appKey.PublicKey, InstallationID: 8, Org: org, Repos: []string{repo},
		JobLease:  30 * time.Second,
		PublicURL: fmt.Sprintf("http://%s:%d", guestHost, guestGitHubPort),
	})
	if err != nil {
		t.Fatal(err)
	}
	ghAddr := serve(t, gh)

	dir := t.TempDir()
	write := gateFiles(t, dir)
	policyCfg := map[string]any{
		"trustedAKs": []string{"ak.pem"},
		// A QEMU -kernel boot: OVMF measures the kernel before
		// "Calling EFI Application from Boot Option" (see
		// docs/measured-boot.md); false for the Secure Boot UKI.
		"directKernelBoot": spec.directKernelBoot,
	}
	if spec.imageProvenance != nil {
		write("image.sigstore.json", spec.imageProvenance, 0o644)
		write("image-signer.pem", spec.imageSigner, 0o644)
		policyCfg["referenceValues"] = []string{"image.sigstore.json"}
		policyCfg["imageSigners"] = []string{"image-signer.pem"}
	} else {
		rv, err := json.MarshalIndent(spec.reference, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		write("refvalues.json", rv, 0o644)
		policyCfg["referenceValues"] = []string{"refvalues.json"}
	}
	write("ak.pem", m.akPEM, 0o644)
	cfg := map[string]any{
		"listen":     "127.0.0.1:0",
		"gateId":     "https://gate.qemu.test",
		"builderId":  "https://gate.qemu.test/builder/v1",
		"dataDir":    "data",
		"signingKey": "signing.pem",
		"github": map[string]any{
			"apiUrl": "http://" + ghAddr + "/", "appId": 7, "installationId": 8, "privateKey": "app.pem",
			"org": org, "labels": []string{"self-hosted", "attested"}, "workFolder": spec.workFolder,
		},
		"policy": policyCfg,
	}
	cfgJSON, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := write("gate.json", cfgJSON, 0o600)

	c, err := jobgate.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := jobgate.NewGitHubRegistryFromConfig(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	policy, digest, err := c.LoadPolicy()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jobgate.LoadSigningKey(c.SigningKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	store, err := jobgate.OpenBoltStore(filepath.Join(c.DataDir, "gate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	w := &world{gh: gh, ghAddr: ghAddr, store: store, gateKey: signer.Public(), gateLog: &bytes.Buffer{}, logMu: &sync.Mutex{}, config: cfgJSON, policy: policy,
		dir: dir, imageProvenance: spec.imageProvenance != nil}
	w.gate, err = jobgate.New(jobgate.Options{
		Config: c, Store: store, Registry: reg, Policy: policy, PolicyDigest: digest, Signer: signer,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{w.logMu, w.gateLog}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	w.gateURL = "http://" + serve(t, w.gate.Handler())
	t.Cleanup(func() {
		if t.Failed() {
			w.logMu.Lock()
			t.Logf("gate log:\n%s", w.gateLog.String())
			w.logMu.Unlock()
		}
	})
	return w
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// serve serves h on a loopback port until the test ends.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	})
	return ln.Addr().String()
}

// audit returns the gate's audit records with a sequence number above after.
func (w *world) audit(t *testing.T, after uint64) []jobgate.AuditRecord {
	t.Helper()
	var out []jobgate.AuditRecord
	err := w.store.AuditLog(context.Background(), func(r jobgate.AuditRecord) error {
		if r.Seq > after {
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (w *world) lastSeq(t *testing.T) uint64 {
	t.Helper()
	var n uint64
	for _, r := range w.audit(t, 0) {
		n = r.Seq
	}
	return n
}

// metrics returns the gate's /metrics text.
func (w *world) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(w.gateURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metric returns one sample's value from a Prometheus text exposition.
func metric(text, name string) (float64, bool) {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// consoleLine is one line of the guest's serial console, stamped with the
// host time it arrived.
type consoleLine struct {
	at   time.Time
	text string
}

// bootRun is one boot of the image.
type bootRun struct {
	workdir  string
	start    time.Time // QEMU started (boot.sh's qemu-start)
	end      time.Time // boot.sh returned: QEMU exited
	console  []consoleLine
	exported map[string][]byte // what the job wrote on /dev/ttyS1
	script   string            // boot.sh's own messages
}

// bootOpts changes one boot.
type bootOpts struct {
	image string   // build.sh output directory
	extra []string // more boot.sh arguments (--cmdline, --uki, ...)
	// timeout bounds the boot (default bootTimeout; boot.sh allows 120 s).
	timeout time.Duration
}

// boot boots the image under QEMU with the machine's TPM, forwarding the
// guest's gate and GitHub addresses to w, and waits for the guest to power
// itself off (boot.sh --agent). The console is read as it arrives so that
// each line carries its host arrival time.
func boot(t *testing.T, w *world, m *machine, o bootOpts) *bootRun {
	t.Helper()
	work := t.TempDir()
	if o.timeout == 0 {
		o.timeout = bootTimeout
	}
	args := []string{o.image, "--agent", "--workdir", work, "--timeout", strconv.Itoa(int(o.timeout / time.Second)),
		"--memory", strconv.Itoa(memoryMiB), "--tpm-state", m.tpmState,
		"--forward", fmt.Sprintf("%s:%d=%s", guestHost, guestGatePort, strings.TrimPrefix(w.gateURL, "http://")),
		"--forward", fmt.Sprintf("%s:%d=%s", guestHost, guestGitHubPort, w.ghAddr),
		"--serial2-file", filepath.Join(work, "ttyS1.out"), "--console-stdout"}
	args = append(args, o.extra...)
	defer qemutest.LockBoots(t)()
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, script("boot.sh"), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &bootRun{workdir: work}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		r.console = append(r.console, consoleLine{at: time.Now(), text: cleanConsole(sc.Text())})
	}
	runErr := cmd.Wait()
	r.end = time.Now()
	r.script = stderr.String()
	if b, err := os.ReadFile(filepath.Join(work, "qemu-start")); err == nil {
		if f, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64); err == nil {
			r.start = time.Unix(0, int64(f*1e9))
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("boot.sh %s\n%s\nconsole:\n%s", strings.Join(o.extra, " "), r.script, r.consoleText())
		}
	})
	if runErr != nil {
		t.Fatalf("boot failed (the guest did not power itself off within %s): %v", o.timeout, runErr)
	}
	if r.start.IsZero() {
		t.Fatal("boot.sh wrote no qemu-start time")
	}
	serial2, err := os.ReadFile(filepath.Join(work, "ttyS1.out"))
	if err != nil {
		t.Fatal(err)
	}
	if r.exported, err = parseExports(serial2); err != nil {
		t.Fatalf("%v; /dev/ttyS1 carried %d bytes:\n%q", err, len(serial2), serial2[:min(len(serial2), 4096)])
	}
	return r
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;=?]*[A-Za-z]`)

func cleanConsole(s string) string { return strings.TrimRight(ansi.ReplaceAllString(s, ""), "\r") }

func (r *bootRun) consoleText() string {
	var b strings.Builder
	for _, l := range r.console {
		fmt.Fprintf(&b, "%6.2fs %s\n", l.at.Sub(r.start).Seconds(), l.text)
	}
	return b.String()
}

// find returns the first console line containing every one of subs.
func (r *bootRun) find(subs ...string) (consoleLine, bool) {
	for _, l := range r.console {
		ok := true
		for _, s := range subs {
			if !strings.Contains(l.text, s) {
				ok = false
				break
			}
		}
		if ok {
			return l, true
		}
	}
	return consoleLine{}, false
}

func (r *bootRun) mustFind(t *testing.T, subs ...string) consoleLine {
	t.Helper()
	l, ok := r.find(subs...)
	if !ok {
		t.Fatalf("no console line with %q", subs)
	}
	return l
}

// guestTime is the time= field of an agent log line (the guest's clock).
func guestTime(t *testing.T, l consoleLine) time.Time {
	t.Helper()
	f := strings.Fields(l.text)
	if len(f) == 0 || !strings.HasPrefix(f[0], "time=") {
		t.Fatalf("not an agent log line: %q", l.text)
	}
	ts, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(f[0], "time="))
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// exportScript is the job step that writes files to /dev/ttyS1, framed as
//
//	ATTESTED-EXPORT-BEGIN <name>
//	<base64>
//	ATTESTED-EXPORT-END <name>
func exportScript(files map[string]string) string {
	var b strings.Builder
	b.WriteString("{\n")
	for name, path := range files {
		fmt.Fprintf(&b, "  echo 'ATTESTED-EXPORT-BEGIN %s'; base64 %q; echo 'ATTESTED-EXPORT-END %s'\n", name, path, name)
	}
	b.WriteString("  echo 'ATTESTED-EXPORT-BEGIN job-user'; printf '%s:%s' \"$(id -u)\" \"$(id -g)\" | base64; echo 'ATTESTED-EXPORT-END job-user'\n")
	b.WriteString("} > /dev/ttyS1\n")
	return b.String()
}

func parseExports(b []byte) (map[string][]byte, error) {
	out := map[string][]byte{}
	var name string
	var body strings.Builder
	for _, l := range strings.Split(strings.ReplaceAll(string(b), "\r", ""), "\n") {
		// OVMF also writes its screen-clearing sequences to this port.
		if i := strings.Index(l, "ATTESTED-EXPORT-"); i > 0 {
			l = l[i:]
		}
		switch {
		case strings.HasPrefix(l, "ATTESTED-EXPORT-BEGIN "):
			name = strings.TrimPrefix(l, "ATTESTED-EXPORT-BEGIN ")
			body.Reset()
		case strings.HasPrefix(l, "ATTESTED-EXPORT-END "):
			if name == "" || strings.TrimPrefix(l, "ATTESTED-EXPORT-END ") != name {
				return nil, fmt.Errorf("/dev/ttyS1: unbalanced export %q", l)
			}
			d, err := base64.StdEncoding.DecodeString(body.String())
			if err != nil {
				return nil, fmt.Errorf("/dev/ttyS1: export %s: %w", name, err)
			}
			out[name] = d
			name = ""
		case name != "":
			body.WriteString(strings.TrimSpace(l))
		}
	}
	if name != "" {
		return nil, errors.New("/dev/ttyS1: export " + name + " not terminated")
	}
	return out, nil
}

// gateFiles writes a gate's App key (app.pem, fakegithub.AppKey) and signing key
// (signing.pem) into dir and returns a writer of further files there.
func gateFiles(t *testing.T, dir string) func(name string, b []byte, mode os.FileMode) string {
	t.Helper()
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	_, appPEM, err := fakegithub.AppKey()
	if err != nil {
		t.Fatal(err)
	}
	write("app.pem", appPEM, 0o600)
	priv, _ := testGateKey(t)
	signing, err := os.ReadFile(priv)
	if err != nil {
		t.Fatal(err)
	}
	write("signing.pem", signing, 0o600)
	return write
}
