package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
)

func encodeStd(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func readFile(path string) ([]byte, error) { return os.ReadFile(path) }

// runListener runs the fake Runner.Listener with jit as its configuration
// in a fresh runner directory and returns its output and exit code.
func runListener(t testing.TB, e *env, jit string) (string, int) {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bin.Listener)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "bin", "Runner.Listener")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "run")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "ACTIONS_RUNNER_INPUT_JITCONFIG=" + jit}
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// jitSecrets reads the configuration files the genuine runner decoded from
// its JIT configuration into its directory, and returns the secret strings
// that must never travel or be logged in clear: the encoded configuration
// itself, the runner's private key file (as the configuration carries it)
// and its OAuth client id.
func jitSecrets(t testing.TB, runnerDir string) map[string]string {
	t.Helper()
	files := map[string][]byte{}
	entries := map[string]string{}
	for _, name := range []string{fakegithub.FileRunner, fakegithub.FileCredentials, fakegithub.FileRSAParams} {
		b, err := os.ReadFile(filepath.Join(runnerDir, name))
		if err != nil {
			t.Fatalf("the runner did not decode its JIT config: %v", err)
		}
		files[name] = b
		entries[name] = encodeStd(b)
	}
	cfg, err := fakegithub.ParseJITConfigFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	outer, err := json.Marshal(entries)
	if err != nil {
		t.Fatal(err)
	}
	// Positive control: this is the configuration GitHub minted (the fake
	// encodes as GitHub does: sorted keys, standard base64).
	if _, err := fakegithub.DecodeJITConfig(encodeStd(outer)); err != nil {
		t.Fatalf("reconstructed JIT config: %v", err)
	}
	return map[string]string{
		"encoded configuration": encodeStd(outer),
		"runner private key":    entries[fakegithub.FileRSAParams],
		"private exponent":      encodeStd(cfg.RSAParams.D),
		"client id":             cfg.Credentials.ClientID(),
	}
}
