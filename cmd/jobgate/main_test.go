package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/jobgate"
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

// TestAuditWhileServing reads the audit log of a running gate through its
// admin socket (the store is locked by the gate), and of a stopped gate
// from the store, even with a stale socket file left behind.
func TestAuditWhileServing(t *testing.T) {
	dir := t.TempDir()
	store, err := jobgate.OpenBoltStore(filepath.Join(dir, "gate.db"))
	if err != nil {
		t.Fatal(err)
	}
	store.Audit(context.Background(), &jobgate.AuditRecord{Action: "admit", Result: "rejected", Reason: "nonce_used"})
	g := newTestGate(t, store)
	sock := filepath.Join(dir, "admin.sock")
	ln, err := listenAdmin(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: g.AdminHandler()}
	go srv.Serve(ln)
	cfg := writeTestConfig(t, dir)
	out, code := runArgs("audit", "show", "--config", cfg)
	if code != 0 || !strings.Contains(out, `"reason":"nonce_used"`) {
		t.Fatalf("show via socket: exit %d: %s", code, out)
	}
	out, code = runArgs("audit", "verify", "--config", cfg)
	if code != 0 || !strings.Contains(out, "audit log OK: 1 records") {
		t.Fatalf("verify via socket: exit %d: %s", code, out)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket mode: %v %v", fi, err)
	}
	srv.Close()
	store.Close()
	// The gate is gone; its socket file may linger.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	out, code = runArgs("audit", "verify", "--config", cfg)
	if code != 0 || !strings.Contains(out, "audit log OK: 1 records") {
		t.Fatalf("verify from the store: exit %d: %s", code, out)
	}
}

func newTestGate(t *testing.T, store jobgate.Store) *jobgate.Gate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	g, err := jobgate.New(jobgate.Options{
		Config: &jobgate.Config{GateID: "g", BuilderID: "b", GitHub: jobgate.GitHubConfig{Org: "o", Labels: []string{"self-hosted"}}},
		Store:  store, Registry: noRegistry{}, Signer: k,
		Policy: &attest.Policy{
			Reference: &attest.ReferenceValues{Format: attest.ReferenceValuesFormat,
				Images:       []attest.Image{{ID: "i", PCRs: map[uint32]attest.Hex{0: make(attest.Hex, 32)}}},
				AgentDigests: []attest.Hex{make(attest.Hex, 32)}},
			TrustedAKs: []crypto.PublicKey{k.Public()},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

type noRegistry struct{}

func (noRegistry) Mint(context.Context, string, []string, string) (int64, string, error) {
	return 0, "", errors.New("no GitHub in this test")
}
func (noRegistry) Remove(context.Context, int64) error                  { return nil }
func (noRegistry) List(context.Context) ([]jobgate.GitHubRunner, error) { return nil, nil }

func writeTestConfig(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "gate.json")
	err := os.WriteFile(p, []byte(`{"listen":"127.0.0.1:0","gateId":"g","builderId":"b","dataDir":".","signingKey":"k",
"github":{"appId":1,"installationId":2,"privateKey":"p","org":"o","labels":["self-hosted"]},
"policy":{"referenceValues":["rv.json"],"trustedAKs":["ak.pem"]}}`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A fleet section is checked before anything starts: image signers are
// required, the webhook secret must be private, the metrics listener
// loopback, and `fleet status` needs a fleet.
func TestServeRefusesBadFleet(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gate.json")
	_, pemKey, err := fakegithub.AppKey()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "app.pem"), pemKey, 0o600)
	write := func(policy, fleet string) {
		os.WriteFile(cfg, []byte(`{"listen":"127.0.0.1:0","gateId":"g","builderId":"b","dataDir":"d","signingKey":"k",
"github":{"appId":1,"installationId":2,"privateKey":"app.pem","org":"o","labels":["self-hosted"]},
"policy":`+policy+`,"fleet":`+fleet+`}`), 0o600)
	}
	pool := `{"name":"linux","labels":["attested"],"image":{"dir":"img","provenance":"img/p.json"},"qemu":{"stateDir":"vms"}}`
	for _, tc := range []struct{ name, policy, fleet, want string }{
		{"no image signers", `{}`, `{"webhookSecret":"s","pools":[` + pool + `]}`, "policy.imageSigners is required with a fleet"},
		{"no webhook secret", `{"imageSigners":["s.pem"]}`, `{"pools":[` + pool + `]}`, "fleet.webhookSecret is required"},
		{"metrics not loopback", `{"imageSigners":["s.pem"]}`, `{"webhookSecret":"s","metricsListen":":9464","pools":[` + pool + `]}`, "must be a loopback address"},
		{"no pools", `{"imageSigners":["s.pem"]}`, `{"webhookSecret":"s","pools":[]}`, "at least one pool"},
		{"unknown field", `{"imageSigners":["s.pem"]}`, `{"webhookSecret":"s","pool":[]}`, "unknown field"},
		{"two providers", `{"imageSigners":["s.pem"]}`, `{"webhookSecret":"s","pools":[{"name":"x","labels":["a"],"image":{"dir":"i","provenance":"p"},"qemu":{"stateDir":"v"},"gce":{}}]}`, "exactly one provider"},
		{"no provenance", `{"imageSigners":["s.pem"]}`, `{"webhookSecret":"s","pools":[{"name":"x","labels":["a"],"image":{"dir":"i"},"qemu":{"stateDir":"v"}}]}`, "image.provenance is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			write(tc.policy, tc.fleet)
			out, code := runArgs("serve", "--config", cfg)
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want %q: %s", code, tc.want, out)
			}
		})
	}
	// A readable webhook secret is refused.
	os.WriteFile(filepath.Join(dir, "secret"), []byte("0123456789abcdef0123"), 0o644)
	write(`{"imageSigners":["s.pem"]}`, `{"webhookSecret":"secret","pools":[`+pool+`]}`)
	if out, code := runArgs("serve", "--config", cfg); code != 1 || !strings.Contains(out, "chmod 600") {
		t.Fatalf("readable secret: exit %d: %s", code, out)
	}
	// fleet status on a gate without a fleet.
	write(`{"referenceValues":["rv.json"],"trustedAKs":["ak.pem"]}`, `null`)
	if out, code := runArgs("fleet", "status", "--config", cfg); code != 1 || !strings.Contains(out, "no fleet section") {
		t.Fatalf("fleet status: exit %d: %s", code, out)
	}
	if out, code := runArgs("fleet", "start", "--config", cfg); code != 2 {
		t.Fatalf("fleet start: exit %d: %s", code, out)
	}
}
