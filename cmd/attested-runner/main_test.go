package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
)

func runArgs(args ...string) (string, int) {
	var out bytes.Buffer
	code := run(context.Background(), args, &out, &out)
	return out.String(), code
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"frobnicate"}, {"run"}, {"hook"}, {"hook", "job-finished"}, {"attest"}, {"run", "--gate", "x", "--runner-user", "a:b"}} {
		if out, code := runArgs(args...); code != 2 {
			t.Errorf("%q: exit %d, want 2: %s", args, code, out)
		}
	}
	for _, args := range [][]string{{"--help"}, {"run", "--help"}, {"attest", "--help"}, {"--version"}} {
		if out, code := runArgs(args...); code != 0 || len(out) < 10 {
			t.Errorf("%q: exit %d: %s", args, code, out)
		}
	}
}

// TestNotOnAnAttestedRunner: the job-side client says clearly where it is.
func TestNotOnAnAttestedRunner(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	out, code := runArgs("attest", "--socket", sock, "--subject-path", "main.go")
	if code != 1 || !strings.Contains(out, "attested runner") {
		t.Fatalf("exit %d: %s", code, out)
	}
	out, code = runArgs("attest", "--socket", sock, "--subject-path", "no-such-file-*")
	if code != 1 || !strings.Contains(out, "matches no file") {
		t.Fatalf("exit %d: %s", code, out)
	}
	out, code = runArgs("hook", "job-started", "--socket", sock)
	if code != 1 || !strings.Contains(out, "refused this job") {
		t.Fatalf("exit %d: %s", code, out)
	}
}

// TestGateURLAndPinnedKey: the agent refuses a gate it cannot talk to
// safely, before it touches the TPM: plain http off loopback (unless the
// named insecure flag is given), and no pinned gate key.
func TestGateURLAndPinnedKey(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://gate.example.com": true, "http://127.0.0.1:8080": true, "http://[::1]:80": true, "http://localhost:1": true,
		"http://10.0.2.100:8080": false, "http://gate.example.com": false, "ftp://gate": false, "gate.example.com": false,
	} {
		if err := checkGateURL(raw, false); (err == nil) != ok {
			t.Errorf("%s: %v", raw, err)
		}
	}
	if err := checkGateURL("http://10.0.2.100:8080", true); err != nil {
		t.Errorf("with --insecure-allow-plain-http-gate: %v", err)
	}
	out, code := runArgs("run", "--gate", "http://10.0.2.100:8080", "--runner-user", "1000:1000")
	if code != 2 || !strings.Contains(out, "--insecure-allow-plain-http-gate") {
		t.Errorf("plain http off loopback: exit %d: %s", code, out)
	}
	out, code = runArgs("run", "--gate", "https://gate.example.com", "--gate-key", filepath.Join(t.TempDir(), "none.pem"), "--runner-user", "1000:1000")
	if code != 1 || !strings.Contains(out, "pinned in the image") {
		t.Errorf("no pinned gate key: exit %d: %s", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(bad, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o644)
	out, code = runArgs("run", "--gate", "https://gate.example.com", "--gate-key", bad, "--runner-user", "1000:1000")
	if code != 1 || !strings.Contains(out, "PUBLIC KEY") {
		t.Errorf("gate key file of the wrong type: exit %d: %s", code, out)
	}
}

// TestSEVSNPFlag: --sev-snp does not go with --tdx, and on a machine that
// is no SEV-SNP guest (this one) the agent refuses to start, naming the
// interfaces it looked for, before it touches the TPM.
func TestSEVSNPFlag(t *testing.T) {
	out, code := runArgs("run", "--gate", "https://gate.example.com", "--sev-snp", "--tdx")
	if code != 2 || !strings.Contains(out, "does not go with --tdx") {
		t.Errorf("--sev-snp --tdx: exit %d: %s", code, out)
	}
	if attest.DetectSNP() == nil {
		t.Skip("an SEV-SNP guest")
	}
	keys := gateKeyFile(t)
	out, code = runArgs("run", "--gate", "https://gate.example.com", "--gate-key", keys, "--sev-snp", "--tpm", filepath.Join(t.TempDir(), "no-tpm"),
		"--runner-user", "1000:1000")
	if code != 1 || !strings.Contains(out, "--sev-snp: not an SEV-SNP guest") || !strings.Contains(out, "/dev/sev-guest") {
		t.Errorf("no SEV-SNP hardware: exit %d: %s", code, out)
	}
}

// TestAzureCVMFlag: --azure-cvm excludes --tdx and --sev-snp; it fetches
// the VCEK from the instance metadata service (--azure-imds) before
// opening the TPM, and an answer that is no VCEK stops the agent with a
// message naming the flag and the service.
func TestAzureCVMFlag(t *testing.T) {
	for _, other := range []string{"--tdx", "--sev-snp"} {
		out, code := runArgs("run", "--gate", "https://gate.example.com", "--azure-cvm", other)
		if code != 2 || !strings.Contains(out, "does not go with --tdx or --sev-snp") {
			t.Errorf("--azure-cvm %s: exit %d: %s", other, code, out)
		}
	}
	keys := gateKeyFile(t)
	host := attesttest.NewSNPHost(t)
	vcek := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: host.Signer.Vcek.Raw}))
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metadata/THIM/amd/certification" || r.Header.Get("Metadata") != "true" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"vcekCert": vcek})
	}))
	defer imds.Close()
	noTPM := filepath.Join(t.TempDir(), "no-tpm")
	for _, tc := range []struct{ imds, want string }{
		{imds.URL + "/elsewhere", "--azure-cvm: VCEK from Azure's instance metadata service: HTTP 404"},
		{imds.URL, "opening TPM " + noTPM},
	} {
		out, code := runArgs("run", "--gate", "https://gate.example.com", "--gate-key", keys, "--azure-cvm", "--azure-imds", tc.imds,
			"--tpm", noTPM, "--runner-user", "1000:1000")
		if code != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("IMDS %s: exit %d, want %q: %s", tc.imds, code, tc.want, out)
		}
	}
}

// TestTDXVTPMFlag: --tdx-vtpm excludes the other TEE flags and, on a
// machine that is no TDX guest (this one), stops the agent naming the flag
// and what is missing.
func TestTDXVTPMFlag(t *testing.T) {
	for _, other := range []string{"--tdx", "--sev-snp", "--azure-cvm"} {
		out, code := runArgs("run", "--gate", "https://gate.example.com", "--tdx-vtpm", other)
		if code != 2 || !strings.Contains(out, "does not go with --tdx, --sev-snp or --azure-cvm") {
			t.Errorf("--tdx-vtpm %s: exit %d: %s", other, code, out)
		}
	}
	if attest.DetectTDX() == nil {
		t.Skip("a TDX guest")
	}
	keys := gateKeyFile(t)
	out, code := runArgs("run", "--gate", "https://gate.example.com", "--gate-key", keys, "--tdx-vtpm", "--tpm", filepath.Join(t.TempDir(), "no-tpm"),
		"--runner-user", "1000:1000")
	if code != 1 || !strings.Contains(out, "--tdx-vtpm: not a TDX guest") {
		t.Errorf("no TDX hardware: exit %d: %s", code, out)
	}
}

// gateKeyFile writes a pinned gate key (any P-256 key) for `run`.
func gateKeyFile(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(t.TempDir(), "gate-keys.pem")
	if err := os.WriteFile(keys, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}), 0o644); err != nil {
		t.Fatal(err)
	}
	return keys
}
