package fleet

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/internal/ekca"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// TestFleetEKActivation: a pool whose provider manufactures every VM's
// fresh swtpm with an EK certificate of the fleet's EK CA admits its VMs
// by credential activation, with no AK read or enrolled by anyone; a VM
// whose swtpm carries a self-made EK certificate from another CA is
// refused (ek_untrusted), and audited.
func TestFleetEKActivation(t *testing.T) {
	fleetCA, err := ekca.New("fleet EK CA")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := ekca.New("fleet EK CA") // same name, another key
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, worldOpts{tpms: true, ekCA: fleetCA, noRecovery: true, pool: func(p *PoolConfig) { p.MinIdle, p.LaunchesPerMinute = 3, 60 }})
	w.prov.foreignCA = foreign // the first VM's TPM
	w.fleet.Schedule(w.ctx)
	if len(w.prov.launches) != 3 {
		t.Fatalf("%d launches", len(w.prov.launches))
	}
	forged, fresh, skips := w.prov.launches[0], w.prov.launches[1], w.prov.launches[2]
	for _, name := range []string{forged, fresh} {
		vm, err := w.store.VM(w.ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if len(vm.AK) != 0 {
			t.Fatalf("VM %s has an enrolled AK", name)
		}
	}
	if _, err := w.boot(w.prov.vm(forged), forged); rejectedCode(err) != "ek_untrusted" {
		t.Fatalf("VM with another CA's EK certificate: %v, want ek_untrusted", err)
	}
	a, err := w.boot(w.prov.vm(fresh), fresh)
	if err != nil {
		t.Fatalf("fresh swtpm VM refused: %v", err)
	}
	if a.resp.RunnerName == "" {
		t.Fatal("no runner")
	}
	var reasons []string
	w.store.AuditLog(w.ctx, func(r jobgate.AuditRecord) error {
		if r.Action == "admit" {
			reasons = append(reasons, r.Result+":"+r.Reason)
		}
		return nil
	})
	if strings.Join(reasons, ",") != "rejected:ek_untrusted,accepted:" {
		t.Fatalf("admission audit %v", reasons)
	}
	// A pool with EK trust admits no agent that skips the activation.
	w.prov.ekCA = nil // boot without --ek-activation
	if _, err := w.boot(w.prov.vm(skips), skips); rejectedCode(err) != "activation_required" {
		t.Fatalf("VM without activation: %v, want activation_required", err)
	}
}

// TestProvisionSWTPMWithEKCA is the qemu provider's EK manufacturing
// (QEMUConfig.EKCA) on a real swtpm, without QEMU: the CA is created in
// its directory, the VM's TPM state gets an RSA EK certificate of that CA
// in NV, locked, which the agent on that TPM (a restarted swtpm, as QEMU
// starts it) reads and activates a credential with.
func TestProvisionSWTPMWithEKCA(t *testing.T) {
	bin := attesttest.RequireSWTPM(t)
	ctx := context.Background()
	caDir := filepath.Join(t.TempDir(), "ekca")
	ca, err := ekca.LoadOrCreate(caDir, "fleet EK CA (linux)")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(caDir, ekca.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key file: %v, %v", fi, err)
	}
	again, err := ekca.LoadOrCreate(caDir, "ignored")
	if err != nil || !again.Cert.Equal(ca.Cert) {
		t.Fatalf("reloading the CA: %v", err)
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "tpm")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := ProvisionSWTPM(ctx, bin, dir, state, func(rw io.ReadWriter) error {
		_, err := ekca.Provision(rw, ca, ekca.RSA)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("manufacturing a VM's swtpm with an EK certificate: %v", time.Since(start).Round(time.Millisecond))

	tpm, err := attesttest.StartSWTPM(ctx, state)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Stop()
	conn, err := tpm.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The guest cannot rewrite its certificate.
	if err := tpm2.NVWrite(conn, tpm2.HandlePlatform, tpmutil.Handle(attest.EKCertNVIndexRSA), "", []byte{0}, 0); err == nil {
		t.Fatal("the EK certificate's NV index is writable")
	}
	c, err := attest.NewTPMCollector(conn, attest.TPMOptions{SoftwareTPM: true, EventLog: func() ([]byte, error) { return attesttest.BootLog(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ar, err := c.ActivationRequest()
	if err != nil || ar == nil {
		t.Fatalf("activation request: %+v, %v", ar, err)
	}
	ek, err := attest.VerifyEKCertificate(ar.EKCertificate, &attest.EKTrust{Roots: []*x509.Certificate{ca.Cert}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ak, err := attest.CheckAKPublic(ar.AKPublic)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("0123456789abcdef0123456789abcdef")
	cred, err := attest.MakeCredential(ek.PublicKey, ak, secret)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.ActivateCredential(cred)
	if err != nil || string(got) != string(secret) {
		t.Fatalf("activation on swtpm: %q, %v", got, err)
	}
	// Another fleet's CA does not vouch for it.
	other, _ := ekca.New("other fleet")
	if _, err := attest.VerifyEKCertificate(ar.EKCertificate, &attest.EKTrust{Roots: []*x509.Certificate{other.Cert}}, time.Now()); !errors.Is(err, attest.ErrEKUntrusted) {
		t.Fatalf("under another CA: %v", err)
	}
}

// TestPoolEKTrust: a pool's EK trust is its trustedEKRoots files plus its
// provider's own EK CA; neither is no EK trust (the AK path applies); a
// root file that does not load stops the fleet.
func TestPoolEKTrust(t *testing.T) {
	vendor, _ := ekca.New("TPM vendor")
	fleetCA, _ := ekca.New("fleet")
	file := filepath.Join(t.TempDir(), "vendor.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: vendor.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if tr, err := poolEKTrust(&PoolConfig{}, &memProvider{}); err != nil || tr != nil {
		t.Fatalf("no EK roots: %+v, %v", tr, err)
	}
	tr, err := poolEKTrust(&PoolConfig{TrustedEKRoots: []string{file}}, &memProvider{ekCA: fleetCA})
	if err != nil || len(tr.Roots) != 2 || !tr.Roots[0].Equal(vendor.Cert) || !tr.Roots[1].Equal(fleetCA.Cert) {
		t.Fatalf("pool EK trust %+v, %v", tr, err)
	}
	if _, err := poolEKTrust(&PoolConfig{TrustedEKRoots: []string{filepath.Join(t.TempDir(), "missing.pem")}}, &memProvider{}); err == nil {
		t.Fatal("a missing root file was accepted")
	}
}
