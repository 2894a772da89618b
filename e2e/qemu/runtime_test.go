package qemu_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/internal/imageref"
)

// fakeRelease writes actions-runner-linux-x64-<version>.tar.gz laid out
// like an official release (bin/Runner.Listener, the launcher scripts,
// externals/) around the fake listener, with one dynamically linked ELF
// (a C++ program against ICU and libstdc++) under externals/ so the
// runner directory holds a binary whose libraries the guest must resolve.
// The real release cannot be downloaded here.
func fakeRelease(t *testing.T, dir, version string) (path, digest string) {
	t.Helper()
	listener := filepath.Join(dir, "Runner.Listener")
	build := exec.Command("go", "build", "-trimpath", "-o", listener, "./e2e/cmd/fake-runner-listener")
	build.Dir, build.Env = repoRoot, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the fake listener: %v\n%s", err, out)
	}
	probe := filepath.Join(dir, "icu-probe")
	src := filepath.Join(dir, "icu-probe.cc")
	os.WriteFile(src, []byte(`#include <unicode/uversion.h>
#include <cstdio>
#include <string>
int main() { UVersionInfo v; u_getVersion(v); std::string s = "icu " + std::to_string(v[0]); std::puts(s.c_str()); return 0; }
`), 0o644)
	if out, err := exec.Command("g++", "-O2", "-o", probe, src, "-licuuc").CombinedOutput(); err != nil {
		t.Fatalf("g++ (apt-get install g++ libicu-dev): %v\n%s", err, out)
	}
	path = filepath.Join(dir, "actions-runner-linux-x64-"+version+".tar.gz")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	add := func(name string, mode int64, body []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(body)), ModTime: time.Unix(1700000000, 0), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	for _, d := range []string{"bin/", "externals/", "externals/probe/"} {
		tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, Typeflag: tar.TypeDir, ModTime: time.Unix(1700000000, 0)})
	}
	l, _ := os.ReadFile(listener)
	p, _ := os.ReadFile(probe)
	add("bin/Runner.Listener", 0o755, l)
	add("externals/probe/icu-probe", 0o755, p)
	add("run.sh", 0o755, []byte("#!/bin/bash\nexec \"$(dirname \"$0\")/bin/Runner.Listener\" run \"$@\"\n"))
	add("config.sh", 0o755, []byte("#!/bin/bash\necho 'attested images take a JIT configuration; config.sh is not used' >&2\nexit 1\n"))
	add("env.sh", 0o755, []byte("#!/bin/bash\n"))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	gz.Close()
	f.Close()
	b, _ := os.ReadFile(path)
	d := sha256.Sum256(b)
	return path, hex.EncodeToString(d[:])
}

// TestRuntimeImage boots an image carrying a runner release (laid out like
// actions/runner's), its runtime from pinned Debian packages, DHCP, and the
// job's work folder on an encrypted scratch disk. Inside the VM the job
// runs the runtime probe (ICU with its data, libstdc++, zlib, OpenSSL,
// GSSAPI, LTTng-UST), checks with the dynamic loader that every ELF file of
// the runner directory, git, tar and the probe resolves all its libraries,
// uses git, tar and gzip, sees DNS from the lease and its workspace on the
// scratch disk, writes a marker there and attests an artifact. After power
// off the scratch disk holds none of what the job wrote in clear.
func TestRuntimeImage(t *testing.T) {
	f := getFixture(t)
	for _, tool := range []string{"g++", "pkg-config"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s=1 but %s is missing: run scripts/prereqs.sh --qemu", e2eEnv, tool)
		}
	}
	work := t.TempDir()
	tarball, digest := fakeRelease(t, work, "2.336.0")
	dir := filepath.Join(work, "image")
	var args []string
	for _, a := range buildArgs(t) {
		if a == "fake" && len(args) > 0 && args[len(args)-1] == "--runner" {
			args = args[:len(args)-1]
			continue
		}
		args = append(args, a)
	}
	args = append(args, "--runner-tarball", tarball, "--runner-sha256", digest, "--scratch", "/dev/vda")
	start := time.Now()
	cmd := exec.Command(script("build.sh"), append([]string{dir}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("build.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("build.sh --runtime: %.1f s; %s", time.Since(start).Seconds(), lastLines(string(out), "library check", "runtime:"))
	files, err := imageref.LoadImageDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	base := f.files
	t.Logf("image size: initrd %.1f MiB compressed (the fake-runner image: %.1f MiB), kernel %.1f MiB",
		float64(len(files.Initrd))/(1<<20), float64(len(base.Initrd))/(1<<20), float64(len(files.Kernel))/(1<<20))
	// The initramfs is unpacked into RAM and stays there: the runtime's
	// added RAM is the difference of the unpacked sizes.
	withRuntime, without := unpackedSize(t, files.Initrd), unpackedSize(t, base.Initrd)
	t.Logf("RAM held by the unpacked initramfs: %.1f MiB (the fake-runner image: %.1f MiB): the runtime adds %.1f MiB",
		float64(withRuntime)/(1<<20), float64(without)/(1<<20), float64(withRuntime-without)/(1<<20))
	var manifest struct {
		Agent struct {
			Runner  map[string]any   `json:"runner"`
			Runtime []map[string]any `json:"runtime"`
		} `json:"agent"`
	}
	mb, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err := json.Unmarshal(mb, &manifest); err != nil {
		t.Fatal(err)
	}
	if manifest.Agent.Runner["tarballSHA256"] != digest || manifest.Agent.Runner["version"] != "2.336.0" || len(manifest.Agent.Runtime) < 30 {
		t.Fatalf("manifest runner %v, %d runtime packages", manifest.Agent.Runner, len(manifest.Agent.Runtime))
	}
	rv, err := imageref.ReferenceValues(dir, []string{filepath.Join(dir, "attested-runner")},
		imageref.Options{QEMUDirect: &imageref.QEMUDirect{MemoryMiB: memoryMiB}})
	if err != nil {
		t.Fatal(err)
	}

	w := newWorld(t, f.machine, gateSpec{reference: rv, directKernelBoot: true, workFolder: "/scratch/_work"})
	marker := "ATTESTED-MARKER-" + randomHex(t, 12)
	job := releaseJob(951)
	elfCheck := `n=0; seen=" "; for f in $(find /runner /usr/bin /usr/lib/git-core /opt/attested-runner /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu -type f); do
  [ "$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ] || continue
  ino=$(stat -c %i "$f"); case "$seen" in *" $ino "*) continue ;; esac; seen="$seen$ino "
  case "$f" in *.ko) continue ;; esac
  # A static binary (the Go listener, busybox) has nothing to resolve.
  if ! out=$(/lib64/ld-linux-x86-64.so.2 --list "$f" 2>&1); then
    case "$out" in ""|*"not a dynamic executable"*|*"statically linked"*) continue ;; *) echo "$f: $out"; exit 1 ;; esac
  fi
  if printf '%s' "$out" | grep -q 'not found'; then echo "$f: $out"; exit 1; fi
  n=$((n+1))
done; echo "elf-check: $n ELF files resolve all their libraries"; test "$n" -gt 50`
	// Each check's output goes to /tmp/checks.txt, exported with the bundle
	// (a failing check is recorded there and does not stop the job, so the
	// export still happens and the test says which check failed).
	check := func(name, script string) fakegithub.Step {
		return fakegithub.Step{Name: name, Run: "echo '== " + name + "' >>/tmp/checks.txt\n( set -e\n" + script + "\n) >>/tmp/checks.txt 2>&1 || echo 'CHECK FAILED: " + name + "' >>/tmp/checks.txt"}
	}
	job.Steps = append([]fakegithub.Step{
		check("memory", `grep -E '^(MemTotal|MemAvailable):' /proc/meminfo || true`),
		check("runtime probe", "LTTNG_UST_REGISTER_TIMEOUT=0 /opt/attested-runner/runtime-probe && /runner/externals/probe/icu-probe"),
		check("every ELF file resolves its libraries", elfCheck),
		check("git, tar, gzip, CA certificates", `git --version && git init -q g && git -C g -c user.email=ci@example.com -c user.name=ci commit -q --allow-empty -m first && git -C g log --oneline | grep -q first && tar --version | head -1 && gzip --version | head -1 && test -s /etc/ssl/certs/ca-certificates.crt && grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt`),
		// QEMU's restricted user network offers no router or DNS server in
		// its DHCP answers (libslirp bootp.c): the lease is checked, the
		// resolv.conf logic by scripts/image/agentinit's TestUdhcpcScript.
		check("network from the DHCP lease", `test -f /etc/resolv.conf && cat /run/attested-runner/dhcp.bound && grep -q '^10.0.2.15/24 ' /run/attested-runner/dhcp.bound`),
		check("workspace on the encrypted scratch disk", `echo "workspace $GITHUB_WORKSPACE"; case "$GITHUB_WORKSPACE" in /scratch/_work/*) ;; *) exit 1 ;; esac
grep ' /scratch ' /proc/mounts; grep ' /scratch ' /proc/mounts | grep -q '^/dev/dm-0 /scratch ext2 '
(set +o pipefail; yes `+marker+` | head -c 4194304 > marker.txt) && sync && echo "marker lines: $(grep -c `+marker+` marker.txt)"`),
	}, job.Steps...)
	last := &job.Steps[len(job.Steps)-1]
	last.Run = strings.Replace(last.Run, "} > /dev/ttyS1", "  echo 'ATTESTED-EXPORT-BEGIN checks'; base64 /tmp/checks.txt; echo 'ATTESTED-EXPORT-END checks'\n} > /dev/ttyS1", 1)
	if _, err := w.gh.QueueJob(job); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(work, "scratch.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 64<<20); err != nil {
		t.Fatal(err)
	}
	r := boot(t, w, f.machine, bootOpts{image: dir, extra: []string{"--disk", disk}, timeout: 115 * time.Second})
	checks := string(r.exported["checks"])
	t.Logf("inside the VM:\n%s", checks)
	checkAdmittedRun(t, w, r, rv.Images[0].ID, 951)
	if strings.Contains(checks, "CHECK FAILED") {
		t.Errorf("a check failed inside the VM")
	}
	for _, want := range []string{"runtime-probe: OK", "elf-check: ", "icu 72", "git version", "10.0.2.15/24", "marker lines: "} {
		if !strings.Contains(checks, want) {
			t.Errorf("the job's checks lack %q", want)
		}
	}
	r.mustFind(t, "agentinit:", "network: eth0 by DHCP")
	r.mustFind(t, "agentinit:", "scratch: /dev/vda encrypted")
	logTimings(t, w, r)

	img, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(img, []byte(marker)) || bytes.Contains(img, []byte("ATTESTED-MARKER-")) {
		t.Fatal("the scratch disk holds the job's marker in clear")
	}
	nonzero := 0
	for _, c := range img {
		if c != 0 {
			nonzero++
		}
	}
	if nonzero < 1<<20 {
		t.Fatalf("only %d non-zero bytes on the scratch disk: the job's 4 MiB did not land there", nonzero)
	}
	t.Logf("scratch disk after power off: %d non-zero bytes, no clear-text marker", nonzero)
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// lastLines returns the lines of out containing any of subs.
func lastLines(out string, subs ...string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				keep = append(keep, strings.TrimSpace(l))
				break
			}
		}
	}
	return strings.Join(keep, "; ")
}

// unpackedSize is the size of an initramfs once decompressed (gzip or
// zstd, by its magic; a plain newc cpio as it is), which is what the kernel unpacks into RAM.
func unpackedSize(t *testing.T, initrd []byte) int64 {
	t.Helper()
	if bytes.HasPrefix(initrd, []byte("070701")) {
		return int64(len(initrd))
	}
	tool := "gzip"
	if bytes.HasPrefix(initrd, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		tool = "zstd"
	}
	cmd := exec.Command(tool, "-dc")
	cmd.Stdin = bytes.NewReader(initrd)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s -dc: %v", tool, err)
	}
	n, err := io.Copy(io.Discard, out)
	if werr := cmd.Wait(); err != nil || werr != nil {
		t.Fatalf("%s -dc: %v %v", tool, err, werr)
	}
	return n
}
