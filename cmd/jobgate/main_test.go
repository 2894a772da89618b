package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runArgs(args ...string) (string, int) {
	var out bytes.Buffer
	code := run(context.Background(), args, &out, &out)
	return out.String(), code
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"frobnicate"}, {"serve"}, {"check-github"}, {"audit"}, {"audit", "verify"}, {"keygen"}, {"serve", "--config"}} {
		if out, code := runArgs(args...); code != 2 {
			t.Errorf("%q: exit %d, want 2: %s", args, code, out)
		}
	}
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}, {"--version"}} {
		if out, code := runArgs(args...); code != 0 || len(out) < 10 {
			t.Errorf("%q: exit %d: %s", args, code, out)
		}
	}
}

func TestKeygen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.pem")
	out, code := runArgs("keygen", "--out", path)
	if code != 0 || !strings.Contains(out, "BEGIN PUBLIC KEY") {
		t.Fatalf("exit %d: %s", code, out)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v", fi, err)
	}
	if out, code := runArgs("keygen", "--out", path); code != 1 || !strings.Contains(out, "refusing to overwrite") {
		t.Fatalf("overwrite: exit %d: %s", code, out)
	}
}

func TestServeRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gate.json")
	// No reference values, no AK trust: the gate must not start open.
	os.WriteFile(cfg, []byte(`{"listen":"127.0.0.1:0","gateId":"g","builderId":"b","dataDir":"d","signingKey":"k",
"github":{"appId":1,"installationId":2,"privateKey":"p","org":"o","labels":["self-hosted"]},"policy":{}}`), 0o600)
	out, code := runArgs("serve", "--config", cfg)
	if code != 1 || !strings.Contains(out, "referenceValues") || !strings.Contains(out, "trustedAKs") {
		t.Fatalf("exit %d: %s", code, out)
	}
	// A world-readable App key is refused.
	os.WriteFile(filepath.Join(dir, "app.pem"), []byte("x"), 0o644)
	os.WriteFile(cfg, []byte(`{"listen":"127.0.0.1:0","gateId":"g","builderId":"b","dataDir":"d","signingKey":"k",
"github":{"appId":1,"installationId":2,"privateKey":"app.pem","org":"o","labels":["self-hosted"]},
"policy":{"referenceValues":["rv.json"],"trustedAKs":["ak.pem"]}}`), 0o600)
	out, code = runArgs("serve", "--config", cfg)
	if code != 1 || !strings.Contains(out, "chmod 600") {
		t.Fatalf("world-readable key: exit %d: %s", code, out)
	}
	// Not loopback without TLS.
	os.WriteFile(cfg, []byte(`{"listen":":8443","gateId":"g","builderId":"b","dataDir":"d","signingKey":"k",
"github":{"appId":1,"installationId":2,"privateKey":"app.pem","org":"o","labels":["self-hosted"]},
"policy":{"referenceValues":["rv.json"],"trustedAKs":["ak.pem"]}}`), 0o600)
	if out, code := runArgs("serve", "--config", cfg); code != 1 || !strings.Contains(out, "configure tls") {
		t.Fatalf("no TLS: exit %d: %s", code, out)
	}
}
