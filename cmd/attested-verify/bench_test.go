package main

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/attested-runner/attested-runner/internal/benchratio"
)

// BenchmarkCLIVerify is the whole attested-verify process on one
// artifact: wall ns/op, cpu-ns/op (the process's CPU time, which a busy
// machine does not inflate), and, when cosign is installed (make bench
// installs it), the ratios to cosign verify-blob-attestation on the same
// bundle in the same run: x-cosign (wall) and x-cosign-cpu. Below 1 is
// faster than cosign; the goal is <= 0.2 (5x faster). cosign checks the
// DSSE signature with the environment key given as --key and nothing of
// the hardware; attested-verify checks everything.
func BenchmarkCLIVerify(b *testing.B) {
	f := newFixture(b)
	args := []string{"artifact", f.artifact, "--gate-key", f.root, "--repo", "octo-org/app", "--insecure-allow-software-tpm"}
	ours := func() {
		if out, code := runCLI(b, args...); code != 0 {
			b.Fatal(out)
		}
	}
	cpu := benchratio.CPU(b)
	for b.Loop() {
		ours()
	}
	cpu()
	cosign := cosignPath()
	if cosign == "" {
		b.Log("cosign not installed (make bench installs it): no x-cosign ratio")
		return
	}
	spki, err := x509.MarshalPKIXPublicKey(f.env.Machine.Collector.Signer().Public())
	must(b, err)
	key := filepath.Join(f.dir, "env-key.pem")
	must(b, os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}), 0o644))
	// cosign's offline key check wants a trusted root; an empty one
	// trusts no CA, log or timestamp authority.
	emptyRoot := filepath.Join(f.dir, "empty_root.json")
	must(b, os.WriteFile(emptyRoot, []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`), 0o644))
	theirs := func() {
		cmd := exec.Command(cosign, "verify-blob-attestation", "--bundle", f.bundle, "--new-bundle-format", "--key", key,
			"--insecure-ignore-tlog", "--trusted-root", emptyRoot, "--type", "https://slsa.dev/provenance/v1", f.artifact)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("cosign: %v\n%s", err, out)
		}
	}
	benchratio.Report(b, "cosign", theirs)
	n := max(b.N, 5)
	b.ReportMetric(benchratio.CPUPerOp(n, ours)/benchratio.CPUPerOp(n, theirs), "x-cosign-cpu")
}

// cosignPath finds cosign: $COSIGN, then PATH, then GOPATH/bin.
func cosignPath() string {
	if p := os.Getenv("COSIGN"); p != "" {
		return p
	}
	if p, err := exec.LookPath("cosign"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(string(out[:len(out)-1]), "bin", "cosign")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}
