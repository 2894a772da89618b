package qemu_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/internal/imageref"
)

// ccKernel is the kernel package of TestAgentConfidentialKernel, from
// trixie-backports: the newest one there that is still a single .deb (from
// 7.x, Debian splits linux-image into linux-binary and linux-modules,
// which build.sh does not assemble yet).
const ccKernel = "linux-image-6.16.12+deb13-cloud-amd64"

// TestAgentConfidentialKernel builds the agent image on a Debian cloud
// kernel from trixie-backports (build.sh --kernel-suite: Linux 6.16, whose
// TDX guest driver has the RTMR sysfs files the agent's TDX collector
// extends, and configfs-tsm for quotes), boots it with measured boot and
// checks that:
//   - the manifest records the kernel's confidential-computing features
//     from its /boot/config (tdxRTMRExtend true);
//   - the agent is admitted and the job's bundle verifies, through the gate
//     and in evidence mode with the signed image provenance, by the CLI;
//   - init mounted configfs, and the TDX and SEV-SNP guest drivers are in
//     the image but not loaded: QEMU under TCG is not a TD (no TDX
//     hardware here), so this shows the kernel and image side only.
func TestAgentConfidentialKernel(t *testing.T) {
	f := getFixture(t)
	root := t.TempDir()
	dir := filepath.Join(root, "image")
	start := time.Now()
	out, err := runBuild(t, dir, "--kernel-suite", "trixie-backports", "--kernel-package", ccKernel)
	if err != nil {
		t.Fatalf("build.sh --kernel-suite trixie-backports: %v\n%s", err, out)
	}
	var manifest struct {
		Kernel struct {
			Package, Version, Release string
			CC                        struct {
				TDXGuest, SEVGuest, TSMReports, TSMMeasurements string
				TDXRTMRExtend                                   bool
			} `json:"confidentialComputing"`
		} `json:"kernel"`
		Agent struct {
			Modules []string `json:"modules"`
		} `json:"agent"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &manifest); err != nil {
		t.Fatal(err)
	}
	k := manifest.Kernel
	t.Logf("build.sh: %.1f s, kernel %s %s (%s), confidential computing %+v", time.Since(start).Seconds(), k.Package, k.Version, k.Release, k.CC)
	if !k.CC.TDXRTMRExtend || k.CC.TSMMeasurements != "y" || k.CC.TDXGuest == "" || k.CC.TSMReports == "" || k.CC.SEVGuest == "" {
		t.Errorf("the kernel's confidential-computing features: %+v", k.CC)
	}
	mods := strings.Join(manifest.Agent.Modules, " ")
	for _, m := range []string{"configfs", "tdx_guest", "sev_guest"} {
		if !strings.Contains(" "+mods+" ", " "+m+" ") {
			t.Errorf("module %s not in the image: %s", m, mods)
		}
	}

	rv, err := imageref.ReferenceValues(dir, []string{filepath.Join(dir, "attested-runner")},
		imageref.Options{QEMUDirect: &imageref.QEMUDirect{MemoryMiB: memoryMiB}})
	if err != nil {
		t.Fatal(err)
	}
	prov, signer, err := signImage(root, dir, rv)
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, f.machine, gateSpec{imageProvenance: prov, imageSigner: signer, directKernelBoot: true})
	if _, err := w.gh.QueueJob(releaseJob(903)); err != nil {
		t.Fatal(err)
	}
	r := boot(t, w, f.machine, bootOpts{image: dir})
	checkAdmittedRun(t, w, r, rv.Images[0].ID, 903)
	r.mustFind(t, "agentinit:", "configfs mounted on /sys/kernel/config")
	r.mustFind(t, "optional module not loaded", "tdx-guest")
	r.mustFind(t, "optional module not loaded", "sev-guest")
}
