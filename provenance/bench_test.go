package provenance_test

import (
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/attested-runner/attested-runner/internal/benchratio"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
)

// BenchmarkVerify is one bundle verification, warm, in process: sigstore
// DSSE signature, environment certificate, response-time quote with its
// event log, expectations.
func BenchmarkVerify(b *testing.B) {
	e := provenancetest.NewEnv(b)
	raw := e.Sign(b, e.Build(map[string][]byte{"app.tar.gz": artifact}))
	d := digest(artifact)
	opts := e.Options()
	b.SetBytes(int64(len(raw)))
	cpu := benchratio.CPU(b)
	for b.Loop() {
		if _, err := provenance.Verify(raw, d, opts); err != nil {
			b.Fatal(err)
		}
	}
	cpu()
}

// BenchmarkVerifyWithDispatch is BenchmarkVerify on a bundle that carries
// the dispatch attestation, as the agent's bundles do: its own signature,
// quote and event log are verified too, about doubling the work.
func BenchmarkVerifyWithDispatch(b *testing.B) {
	e := provenancetest.NewEnv(b)
	disp := signDispatch(b, e, e.Job)
	build := e.Build(map[string][]byte{"app.tar.gz": artifact})
	build.Dispatch = disp
	raw := e.Sign(b, build)
	ad := digest(artifact)
	opts := e.Options()
	b.SetBytes(int64(len(raw)))
	cpu := benchratio.CPU(b)
	for b.Loop() {
		if _, err := provenance.Verify(raw, ad, opts); err != nil {
			b.Fatal(err)
		}
	}
	cpu()
}

// BenchmarkDigestFile hashes a 1 GiB file and reports the ratio of its
// throughput to sha256sum's on the same file in the same run (x-sha256sum
// above 1 means slower than sha256sum: the target is <= 1.11, i.e. >= 0.9x
// its throughput). Set ATTESTED_BENCH_HASH_SIZE to change the size.
func BenchmarkDigestFile(b *testing.B) {
	if _, err := exec.LookPath("sha256sum"); err != nil {
		b.Fatal("sha256sum (coreutils) is needed for the baseline")
	}
	size := int64(1 << 30)
	if s := os.Getenv("ATTESTED_BENCH_HASH_SIZE"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			size = n
		}
	}
	path := filepath.Join(b.TempDir(), "artifact.bin")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		b.Fatal(err)
	}
	f.Close()
	// Warm the page cache for both contenders.
	if _, err := provenance.DigestFile(path); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if _, err := provenance.DigestFile(path); err != nil {
			b.Fatal(err)
		}
	}
	benchratio.Report(b, "sha256sum", func() {
		if out, err := exec.Command("sha256sum", path).CombinedOutput(); err != nil {
			b.Fatalf("sha256sum: %v: %s", err, out)
		}
	})
}
