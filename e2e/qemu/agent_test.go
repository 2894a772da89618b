package qemu_test

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/internal/imageref"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/provenance"
)

// fixture is the image every test boots, its offline reference values and
// the enrolled machine. Built once per test binary.
type fixture struct {
	dir     string // build.sh output
	files   *imageref.ImageFiles
	rv      *attest.ReferenceValues
	machine *machine
	// imageProvenance is the image's SLSA provenance, signed by the image
	// builder key imageSigner (PEM public key), from the refvalues tool.
	imageProvenance, imageSigner []byte
}

var (
	fixOnce sync.Once
	fix     *fixture
	fixErr  error
	fixRoot string
)

func getFixture(t *testing.T) *fixture {
	t.Helper()
	requireQEMU(t)
	fixOnce.Do(func() { fix, fixErr = buildFixture(t) })
	if fixErr != nil || fix == nil {
		t.Fatalf("image fixture: %v (see the first test's log)", fixErr)
	}
	return fix
}

func buildFixture(t *testing.T) (*fixture, error) {
	root, err := os.MkdirTemp("", "attested-qemu-e2e")
	if err != nil {
		return nil, err
	}
	fixRoot = root
	dir := filepath.Join(root, "image")
	start := time.Now()
	// gzip, not the default zstd: TestAgentRefused flips the gzip header's
	// MTIME byte, which still unpacks (TestRuntimeImage boots zstd).
	if out, err := runBuild(t, dir, "--compress", "gzip"); err != nil {
		return nil, fmt.Errorf("build.sh: %v\n%s", err, out)
	}
	t.Logf("build.sh --agent: %.1f s", time.Since(start).Seconds())
	files, err := imageref.LoadImageDir(dir)
	if err != nil {
		return nil, err
	}
	// Reference values, offline: the image files and the agent binary the
	// build put into the initrd. Nothing comes from a boot.
	rv, err := imageref.ReferenceValues(dir, []string{filepath.Join(dir, "attested-runner")},
		imageref.Options{QEMUDirect: &imageref.QEMUDirect{MemoryMiB: memoryMiB}})
	if err != nil {
		return nil, err
	}
	var manifest struct {
		Agent struct {
			SHA256 string `json:"sha256"`
		} `json:"agent"`
		Initrd struct {
			SHA256 string `json:"sha256"`
		} `json:"initrd"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &manifest); err != nil {
		return nil, fmt.Errorf("manifest.json: %w", err)
	}
	if got := hex.EncodeToString(rv.AgentDigests[0]); got != manifest.Agent.SHA256 {
		return nil, fmt.Errorf("agent digest %s, manifest says %s", got, manifest.Agent.SHA256)
	}
	img := rv.Images[0]
	t.Logf("image %s: initrd %d bytes (sha256 %s), agent sha256 %s", img.ID, len(files.Initrd), manifest.Initrd.SHA256, manifest.Agent.SHA256)
	for _, e := range img.Events {
		t.Logf("  reference PCR %d %x %s", e.PCR, []byte(e.Digest), e.Description)
	}
	for _, i := range []uint32{4, 9} {
		t.Logf("  reference PCR %d = %x", i, []byte(img.PCRs[i]))
	}
	prov, signer, err := signImage(root, dir, rv)
	if err != nil {
		return nil, err
	}
	return &fixture{dir: dir, files: files, rv: rv, machine: enrollTPM(t, root), imageProvenance: prov, imageSigner: signer}, nil
}

// signImage runs the admin's command, scripts/image/refvalues --sign-key,
// on the image, and checks that the signed reference values are the ones
// computed in process.
func signImage(root, dir string, rv *attest.ReferenceValues) (bundle, signerPEM []byte, err error) {
	keyPath := filepath.Join(root, "image-key.pem")
	if signerPEM, err = jobgate.GenerateSigningKey(keyPath); err != nil {
		return nil, nil, err
	}
	provPath := filepath.Join(root, "image.sigstore.json")
	cmd := exec.Command("go", "run", "./scripts/image/refvalues", "--image", dir, "--agent", filepath.Join(dir, "attested-runner"),
		"--memory", fmt.Sprint(memoryMiB), "-o", filepath.Join(root, "refvalues.json"),
		"--sign-key", keyPath, "--provenance", provPath, "--builder-id", "https://qemu.test/image-builder")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("refvalues --sign-key: %v\n%s", err, out)
	}
	if bundle, err = os.ReadFile(provPath); err != nil {
		return nil, nil, err
	}
	keys, err := provenance.ParseTrustedRoots(signerPEM)
	if err != nil {
		return nil, nil, err
	}
	v, err := provenance.VerifyImage(bundle, keys)
	if err != nil {
		return nil, nil, err
	}
	got, _ := json.Marshal(v.ReferenceValues)
	want, _ := json.Marshal(rv)
	if !bytes.Equal(got, want) {
		return nil, nil, fmt.Errorf("signed reference values differ from the computed ones:\n%s\n%s", got, want)
	}
	return bundle, signerPEM, nil
}

func runBuild(t *testing.T, dir string, extra ...string) (string, error) {
	args := append(append([]string{dir}, buildArgs(t)...), extra...)
	var out bytes.Buffer
	cmd := exec.Command(script("build.sh"), args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// releaseJob builds an artifact, attests it with the job-side action baked
// into the image, checks that the job has no access to the TPM, and exports
// the bundle, the artifact, the dispatch attestation and its own uid:gid on
// /dev/ttyS1.
func releaseJob(runID int64) fakegithub.Job {
	return fakegithub.Job{
		Repository: repo, Ref: "refs/heads/main", SHA: strings.Repeat("ab", 20),
		WorkflowRef: repo + "/.github/workflows/release.yml@refs/heads/main", WorkflowSHA: strings.Repeat("ab", 20),
		EventName: "push", Actor: "octocat", RunID: runID, RunAttempt: 1, RunNumber: 3, Job: "build",
		Labels:  []string{"self-hosted", "attested"},
		Actions: []fakegithub.ActionRef{{Repository: "actions/checkout", Ref: "v4", SHA: "11bd71901bbe5b1630ceea73d27597364c9af683"}},
		Steps: []fakegithub.Step{
			{Name: "build", Run: "mkdir -p dist && echo 'release 1.0' > dist/app.tar.gz"},
			{Name: "attest", Uses: "/opt/attested-runner/action/attest", With: map[string]string{"subject-path": "dist/*.tar.gz"}},
			{Name: "no TPM for the job", Run: "test ! -r /dev/tpmrm0 && test ! -w /dev/tpmrm0"},
			{Name: "export", Run: exportScript(map[string]string{
				"bundle":   "dist/app.tar.gz.sigstore.json",
				"artifact": "dist/app.tar.gz",
				"dispatch": "/run/attested-runner/public/dispatch.sigstore.json",
			})},
		},
	}
}

// TestAgentAdmittedRunsJob is the whole flow on a real measured boot: the
// agent in the VM quotes the real event log with the swtpm behind
// /dev/tpmrm0, the gate admits it against the offline reference values, the
// job runs as the unprivileged runner user and gets provenance that
// verifies, the runner is deregistered and the VM powers off.
func TestAgentAdmittedRunsJob(t *testing.T) {
	f := getFixture(t)
	// The gate takes its reference values from the signed image provenance.
	w := newWorld(t, f.machine, gateSpec{imageProvenance: f.imageProvenance, imageSigner: f.imageSigner, directKernelBoot: true})
	t.Logf("gate configuration:\n%s", w.config)
	if _, err := w.gh.QueueJob(releaseJob(901)); err != nil {
		t.Fatal(err)
	}
	r := boot(t, w, f.machine, bootOpts{image: f.dir})
	checkAdmittedRun(t, w, r, f.rv.Images[0].ID, 901)
	logTimings(t, w, r)
}

// checkAdmittedRun asserts a boot that was admitted as image imageID, ran
// job runID and tore down.
func checkAdmittedRun(t *testing.T, w *world, r *bootRun, imageID string, runID int64) {
	t.Helper()
	recs := w.audit(t, 0)
	var admitted, deregistered []string
	for _, rec := range recs {
		switch {
		case rec.Action == "admit" && rec.Result == "accepted":
			if !strings.Contains(rec.Detail, "image "+imageID+",") {
				t.Errorf("admitted as %q, want image %s", rec.Detail, imageID)
			}
			admitted = append(admitted, rec.RunnerName)
			t.Logf("audit: admit accepted: runner %s, %s", rec.RunnerName, rec.Detail)
		case rec.Action == "deregister" && rec.Result == "removed":
			deregistered = append(deregistered, rec.RunnerName)
		case rec.Result == "rejected" || rec.Result == "failed":
			t.Errorf("audit: %s %s %s: %s", rec.Action, rec.Result, rec.Reason, rec.Detail)
		}
	}
	if len(admitted) != 1 || len(deregistered) != 1 || admitted[0] != deregistered[0] {
		t.Fatalf("admitted %v, deregistered %v: want the same single runner", admitted, deregistered)
	}
	if v, _ := metric(w.metrics(t), `jobgate_admissions_total{result="accepted",reason=""}`); v != 1 {
		t.Errorf("metrics: %v accepted admissions, want 1", v)
	}
	if n := w.gh.JITMints(); n != 1 {
		t.Errorf("%d runners minted, want 1", n)
	}
	if n := len(w.gh.Runners()); n != 0 {
		t.Errorf("%d runners left on GitHub", n)
	}
	res, ok := w.gh.JobResult(runID)
	if !ok || res.Result != fakegithub.ResultSucceeded || res.RunnerName != admitted[0] {
		t.Fatalf("job %d: %+v", runID, res)
	}
	r.mustFind(t, "msg=admitted", "image="+imageID)
	r.mustFind(t, `msg="job started"`)
	r.mustFind(t, "msg=deregistered", "runner="+admitted[0])

	if got := string(r.exported["job-user"]); got != "1000:1000" {
		t.Errorf("the job ran as %q, want the runner user 1000:1000", got)
	}
	bundle, art, disp := r.exported["bundle"], r.exported["artifact"], r.exported["dispatch"]
	if len(bundle) == 0 || len(art) == 0 || len(disp) == 0 {
		t.Fatalf("the job exported bundle %d bytes, artifact %d, dispatch %d", len(bundle), len(art), len(disp))
	}
	d := sha256.Sum256(art)
	want := provenance.VerifyOptions{
		ExpectedRepository: repo, ExpectedRef: "refs/heads/main", ExpectedWorkflow: ".github/workflows/release.yml",
		ExpectedRunID: fmt.Sprint(runID), ExpectedBuilderID: "https://gate.qemu.test/builder/v1",
	}
	// Through the gate's environment certificate.
	viaGate := want
	viaGate.TrustedGateRoots = []crypto.PublicKey{w.gateKey}
	res1, err := provenance.Verify(bundle, d[:], viaGate)
	if err != nil {
		t.Fatalf("provenance (gate root): %v\n%+v", err, res1.Checks)
	}
	if res1.ImageID != imageID || res1.Level != 2 {
		t.Errorf("provenance: image %q level %d, want %s at BuildEnv L2", res1.ImageID, res1.Level, imageID)
	}
	var names []string
	for _, e := range res1.Claims.Lifecycle.Events {
		names = append(names, e.Type.String())
	}
	if strings.Join(names, ",") != "agent-start,env-key,job-start" {
		t.Errorf("lifecycle at signing: %v", names)
	}
	// Without trusting the gate: the response-time quote from the VM,
	// against the offline reference values and the enrolled AK.
	viaEvidence := want
	viaEvidence.ExpectedBuilderID = ""
	viaEvidence.ReferenceValues = w.policy
	res2, err := provenance.Verify(bundle, d[:], viaEvidence)
	if err != nil {
		t.Fatalf("provenance (evidence against the reference values): %v\n%+v", err, res2.Checks)
	}
	if res2.ImageID != imageID {
		t.Errorf("evidence mode: image %q, want %s", res2.ImageID, imageID)
	}
	if id, _, err := provenance.VerifyDispatch(disp, []crypto.PublicKey{w.gateKey}); err != nil || id != res1.BuildID {
		t.Errorf("dispatch attestation: build %q, %v (provenance build %q)", id, err, res1.BuildID)
	}
	if w.imageProvenance {
		consumerEvidenceMode(t, w, bundle, art, runID)
	}
	t.Logf("provenance verified: build %s, image %s, level L%d, actions %v", res1.BuildID, res1.ImageID, res1.Level, res1.Actions)
}

// consumerEvidenceMode runs the consumer CLI in evidence mode on what the
// VM exported, as a consumer trusting no gate would: the signed image
// provenance as the reference values (a qemu-direct image implies the
// -kernel relaxation, a UKI does not), the enrolled AK. Every check
// passes, including the dispatch attestation, checked without the gate.
func consumerEvidenceMode(t *testing.T, w *world, bundle, art []byte, runID int64) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "attested-verify")
	build := exec.Command("go", "build", "-o", bin, "./cmd/attested-verify")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building attested-verify: %v\n%s", err, out)
	}
	artPath, bundlePath := filepath.Join(dir, "artifact"), filepath.Join(dir, "artifact.sigstore.json")
	if err := os.WriteFile(artPath, art, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bundlePath, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "artifact", artPath, "--bundle", bundlePath, "--repo", repo, "--run-id", fmt.Sprint(runID), "--hostname", w.gh.URL(),
		"--evidence", "--reference-values", filepath.Join(w.dir, "image.sigstore.json"), "--image-key", filepath.Join(w.dir, "image-signer.pem"),
		"--trusted-ak", filepath.Join(w.dir, "ak.pem"), "--insecure-allow-software-tpm", "--format", "json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("attested-verify --evidence: %v\n%s%s", err, out, stderr.Bytes())
	}
	var report []struct {
		Verified       bool `json:"verified"`
		AttestedRunner struct {
			Checks []provenance.Check `json:"checks"`
		} `json:"attestedRunner"`
	}
	if err := json.Unmarshal(out, &report); err != nil || len(report) != 1 || !report[0].Verified {
		t.Fatalf("attested-verify --evidence report: %v\n%s", err, out)
	}
	passed := map[string]bool{}
	for _, c := range report[0].AttestedRunner.Checks {
		passed[c.Name] = c.OK
	}
	for _, name := range []string{"environment", "signature", "evidence", "dispatch", "level"} {
		if !passed[name] {
			t.Errorf("evidence mode: check %s did not pass: %+v", name, report[0].AttestedRunner.Checks)
		}
	}
	t.Logf("consumer CLI in evidence mode (no gate trusted): %d checks passed", len(passed))
}

// logTimings prints where the time of an admitted boot went: host arrival
// times of console lines against QEMU's start, and the agent's own clock
// from its log timestamps for the part the agent adds.
func logTimings(t *testing.T, w *world, r *bootRun) {
	t.Helper()
	initLine := r.mustFind(t, "agentinit:")
	agentStart := r.mustFind(t, `msg="attested-runner starting"`)
	keyLine := r.mustFind(t, `msg="environment key created"`)
	admitted := r.mustFind(t, "msg=admitted")
	jobStarted := r.mustFind(t, `msg="job started"`)
	dereg := r.mustFind(t, "msg=deregistered")
	net := r.mustFind(t, "agentinit:", "network:")
	agentGuest := guestTime(t, admitted).Sub(guestTime(t, agentStart))
	since := func(l consoleLine) float64 { return l.at.Sub(r.start).Seconds() }
	verify, _ := metric(w.metrics(t), "jobgate_verify_seconds_sum")
	t.Logf(`timings (TCG, 1 vCPU, %d MiB; host arrival of console lines, seconds from QEMU start):
  OVMF + kernel + initrd unpack, until /init prints  %6.2f  (kernel uptime when the network was up: %s)
  agent started (init: modules, network; the agent hashes itself)  %6.2f
  agent: TPM keys created                            %6.2f
  admitted (boot to admitted)                        %6.2f
    the agent's part (start -> admitted): %.2f s by its own log clock (%.2f s by arrival), gate verification %.3f s
  job started                                        %6.2f
  deregistered                                       %6.2f
  powered off (QEMU exited)                          %6.2f`,
		memoryMiB, since(initLine), bracket(net.text), since(agentStart),
		since(keyLine), since(admitted), agentGuest.Seconds(), admitted.at.Sub(agentStart.at).Seconds(), verify,
		since(jobStarted), since(dereg), r.end.Sub(r.start).Seconds())
}

// bracket returns the "[uptime]" agentinit prints.
func bracket(s string) string {
	if i, j := strings.Index(s, "["), strings.Index(s, "]"); i >= 0 && j > i {
		return s[i+1:j] + " s"
	}
	return "?"
}

// TestAgentRefused boots images that differ from the reference values in
// one measured input each. The firmware and the kernel measure the change,
// the agent's evidence (quote, event log replay, AK) is otherwise valid,
// and the gate refuses it as reference_mismatch: no runner is minted, the
// agent tears down and the VM powers off.
func TestAgentRefused(t *testing.T) {
	f := getFixture(t)
	w := newWorld(t, f.machine, gateSpec{reference: f.rv, directKernelBoot: true})
	// predict is what imageref computes, offline, for the changed input:
	// the refusal must name exactly that measurement.
	predict := func(t *testing.T, pcr uint32, kernel, initrd []byte, cmdline string) string {
		c, err := imageref.ComputeDigests(kernel, initrd, cmdline, imageref.Options{QEMUDirect: &imageref.QEMUDirect{MemoryMiB: memoryMiB}})
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("PCR %d is %x, want %x", pcr, c.PCRs[pcr], []byte(f.rv.Images[0].PCRs[pcr]))
	}
	k, i, c := f.files.Kernel, f.files.Initrd, f.files.Cmdline
	tests := []struct {
		name string
		// prepare returns the boot and the refusal detail it must cause.
		prepare func(t *testing.T) (bootOpts, string)
	}{
		{"other kernel command line", func(t *testing.T) (bootOpts, string) {
			return bootOpts{image: f.dir, extra: []string{"--cmdline", c + " loglevel=3"}}, predict(t, 9, k, i, c+" loglevel=3")
		}},
		{"initrd with one byte changed", func(t *testing.T) (bootOpts, string) {
			dir := copyImage(t, f.dir)
			// Byte 4 is the gzip header's MTIME (0 with gzip -n): the
			// initrd still unpacks and boots, with the same size, so only
			// its own measurement changes.
			changed := modifyFile(t, filepath.Join(dir, "initrd.img"), func(b []byte) { b[4] ^= 0x01 })
			return bootOpts{image: dir}, predict(t, 9, k, changed, c)
		}},
		{"kernel not in the reference values", func(t *testing.T) (bootOpts, string) {
			dir := copyImage(t, f.dir)
			// Byte 0x20 is in the unused part of the MZ header: covered by
			// the Authenticode digest, ignored by the boot.
			changed := modifyFile(t, filepath.Join(dir, "vmlinuz"), func(b []byte) { b[0x20] ^= 0x01 })
			return bootOpts{image: dir}, predict(t, 4, changed, i, c)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seq, mints := w.lastSeq(t), w.gh.JITMints()
			o, wantDetail := tc.prepare(t)
			r := boot(t, w, f.machine, o)
			checkRefused(t, w, r, seq, mints, "reference_mismatch", wantDetail)
		})
	}
}

// checkRefused asserts that the boot's admission was refused with reason
// and nothing else happened at the gate or GitHub.
func checkRefused(t *testing.T, w *world, r *bootRun, seq uint64, mints int, reason, wantDetail string) {
	t.Helper()
	recs := w.audit(t, seq)
	if len(recs) != 1 || recs[0].Action != "admit" || recs[0].Result != "rejected" || recs[0].Reason != reason {
		t.Fatalf("audit records %+v, want one admit rejected %s", recs, reason)
	}
	if !strings.Contains(recs[0].Detail, wantDetail) {
		t.Errorf("refusal detail %q does not name %q", recs[0].Detail, wantDetail)
	}
	t.Logf("audit: admit rejected %s: %s", recs[0].Reason, recs[0].Detail)
	if n := w.gh.JITMints(); n != mints {
		t.Errorf("%d runners minted for refused evidence", n-mints)
	}
	if _, ok := r.find("msg=admitted"); ok {
		t.Error("the agent logged an admission")
	}
	refusal := r.mustFind(t, "admission failed", "gate refused (403 "+reason+")")
	r.mustFind(t, "msg=teardown", `reason="not admitted"`)
	if len(r.exported) != 0 {
		t.Errorf("a job ran: exported %v", r.exported)
	}
	t.Logf("refused %.2f s after QEMU start; powered off at %.2f s", refusal.at.Sub(r.start).Seconds(), r.end.Sub(r.start).Seconds())
}

// TestAgentSecureBootUKI boots the same kernel, initrd and command line as
// a signed unified kernel image under OVMF's Secure Boot build: the gate,
// with reference values computed offline from the UKI (Secure Boot
// required) and no direct-boot relaxation, admits it; the same UKI booted
// with Secure Boot off is refused.
func TestAgentSecureBootUKI(t *testing.T) {
	f := getFixture(t)
	for _, tool := range []string{"objcopy", "sbsign", "mkfs.vfat", "mcopy", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s=1 but %s is missing (apt-get install binutils sbsigntool dosfstools mtools openssl systemd-boot-efi)", e2eEnv, tool)
		}
	}
	dir := copyImage(t, f.dir)
	runScript(t, script("uki.sh"), dir)
	uki, err := os.ReadFile(filepath.Join(dir, "uki.efi"))
	if err != nil {
		t.Fatal(err)
	}
	ukiDigest := sha256.Sum256(uki)
	ref, err := imageref.ComputeUKI(uki, "runner-uki-"+hex.EncodeToString(ukiDigest[:8]))
	if err != nil {
		t.Fatal(err)
	}
	ukiPath := filepath.Join(dir, "uki.efi")
	// The admin's commands: refvalues --boot uki signs the UKI image's
	// provenance; the gate takes its reference values only from that
	// signed bundle (policy.imageSigners).
	keyPath := filepath.Join(t.TempDir(), "image-key.pem")
	signer, err := jobgate.GenerateSigningKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	provPath := filepath.Join(t.TempDir(), "uki.sigstore.json")
	cmd := exec.Command("go", "run", "./scripts/image/refvalues", "--image", dir, "--boot", "uki", "--uki", ukiPath,
		"--agent", filepath.Join(f.dir, "attested-runner"), "-o", filepath.Join(t.TempDir(), "rv.json"),
		"--sign-key", keyPath, "--provenance", provPath, "--builder-id", "https://qemu.test/image-builder")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("refvalues --boot uki: %v\n%s", err, out)
	}
	prov, err := os.ReadFile(provPath)
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := provenance.ParseTrustedRoots(signer)
	vi, err := provenance.VerifyImage(prov, keys)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := vi.ReferenceValues.Images[0], *ref; got.ID != want.ID || !got.SecureBoot || len(got.Events) != len(want.Events) {
		t.Fatalf("refvalues --boot uki computed %+v, want %+v", got, want)
	}
	if err := vi.CheckFile("uki.efi", ukiDigest[:]); err != nil {
		t.Fatalf("the UKI is not a subject of its provenance: %v", err)
	}
	w := newWorld(t, f.machine, gateSpec{imageProvenance: prov, imageSigner: signer})

	t.Run("secure boot on: admitted", func(t *testing.T) {
		if _, err := w.gh.QueueJob(releaseJob(902)); err != nil {
			t.Fatal(err)
		}
		r := boot(t, w, f.machine, bootOpts{image: dir, extra: []string{"--uki", ukiPath, "--secure-boot"}})
		checkAdmittedRun(t, w, r, ref.ID, 902)
		admitted := r.mustFind(t, "msg=admitted")
		t.Logf("UKI admitted %.2f s after QEMU start, powered off at %.2f s", admitted.at.Sub(r.start).Seconds(), r.end.Sub(r.start).Seconds())
	})
	t.Run("secure boot off: refused", func(t *testing.T) {
		seq, mints := w.lastSeq(t), w.gh.JITMints()
		r := boot(t, w, f.machine, bootOpts{image: dir, extra: []string{"--uki", ukiPath}})
		checkRefused(t, w, r, seq, mints, "reference_mismatch", "Secure Boot is not enabled")
	})
}

// TestAgentImageReproducible builds the agent image twice from one snapshot
// of the source tree and compares the bytes: same inputs (kernel and
// userland .debs, Go sources and toolchain, SOURCE_DATE_EPOCH), same image,
// so the reference values of a published image can be recomputed by anyone.
// The snapshot keeps edits to the working tree during the test out of it.
func TestAgentImageReproducible(t *testing.T) {
	requireQEMU(t)
	src := t.TempDir()
	copyTree(t, repoRoot, src)
	var sums [2][]byte
	for i := range sums {
		dir := filepath.Join(t.TempDir(), "image")
		var out bytes.Buffer
		cmd := exec.Command(filepath.Join(src, "scripts", "image", "build.sh"), append([]string{dir}, buildArgs(t)...)...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("build.sh: %v\n%s", err, out.String())
		}
		b, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
		if err != nil {
			t.Fatal(err)
		}
		agent, err := os.ReadFile(filepath.Join(dir, "attested-runner"))
		if err != nil {
			t.Fatal(err)
		}
		d := sha256.Sum256(agent)
		sums[i] = append(b, fmt.Sprintf("%x  attested-runner\n", d)...)
	}
	if !bytes.Equal(sums[0], sums[1]) {
		t.Fatalf("two builds of the same sources differ:\n%s\n%s", sums[0], sums[1])
	}
	t.Logf("two builds, same bytes:\n%s", sums[0])
}

// copyTree copies the source tree (not .git, not build outputs).
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		if d.IsDir() && (rel == ".git" || rel == "bin") {
			return filepath.SkipDir
		}
		dst := filepath.Join(to, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(dst, 0o755)
		case info.Mode().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, b, info.Mode().Perm())
		}
		return nil // symlinks, sockets: not part of the sources
	})
	if err != nil {
		t.Fatal(err)
	}
}

// copyImage copies a build.sh output directory so one file can be changed.
func copyImage(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	for _, name := range []string{"vmlinuz", "initrd.img", "cmdline", "manifest.json"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// modifyFile changes a file in place and returns its new contents.
func modifyFile(t *testing.T, path string, f func([]byte)) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}
