//go:build cgo

package attesttest

import (
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tpm-tools/simulator"
)

// Simulator returns the process's in-process TPM simulator, freshly
// manufactured (new seeds: a different TPM, with a different AK, each call)
// and with BootLog replayed. It is closed when the test ends; a second call
// in the same test blocks until the first is closed, so use CloseNow.
func Simulator(t testing.TB) *simulator.Simulator {
	t.Helper()
	return simulatorWithLog(t, BootLog())
}

func simulatorWithLog(t testing.TB, log []byte) *simulator.Simulator {
	t.Helper()
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("TPM simulator: %v", err)
	}
	t.Cleanup(func() {
		if !sim.IsClosed() {
			sim.Close()
		}
	})
	if err := ReplayBootLog(sim, log); err != nil {
		t.Fatal(err)
	}
	return sim
}

// Machine is a simulated machine: a TPM with a boot replayed into it, the
// agent's collector booted on it (agent-start, keys, env-key), and the policy
// that admits it.
type Machine struct {
	TPM       *simulator.Simulator
	Collector *attest.TPMCollector
	Policy    *attest.Policy
}

// SimulatedMachine returns a Machine on a fresh in-process simulator. Close
// m.TPM to start another one in the same test.
func SimulatedMachine(t testing.TB) *Machine {
	t.Helper()
	return SimulatedMachineWithLog(t, BootLog())
}

// SimulatedMachineWithLog is SimulatedMachine booted with another firmware
// event log.
func SimulatedMachineWithLog(t testing.TB, log []byte) *Machine {
	t.Helper()
	sim := simulatorWithLog(t, log)
	p, err := Policy(sim)
	if err != nil {
		t.Fatal(err)
	}
	c, err := attest.NewTPMCollector(sim, attest.TPMOptions{
		EventLog:    func() ([]byte, error) { return log, nil },
		SoftwareTPM: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := BootAgent(c); err != nil {
		t.Fatal(err)
	}
	return &Machine{TPM: sim, Collector: c, Policy: p}
}

// SimulatedTPM returns a fresh simulator with the boot replayed and a
// collector on it that has done nothing yet (the agent boots it), with the
// policy that admits it once the agent records AgentDigest.
func SimulatedTPM(t testing.TB) (*attest.TPMCollector, *attest.Policy) {
	t.Helper()
	return simulatedTPM(t, attest.TPMOptions{SoftwareTPM: true})
}

// SimulatedSNPTPM is SimulatedTPM as the vTPM of an SEV-SNP confidential
// VM: the collector asks host for a report with every quote, and is not
// labelled a software TPM (as a cloud vTPM is not), so that the evidence
// can show level 3. The policy lists host's measurement on the image,
// trusts host's test-only AMD chain, and refuses software TPMs.
func SimulatedSNPTPM(t testing.TB, host *SNPHost) (*attest.TPMCollector, *attest.Policy) {
	t.Helper()
	c, p := simulatedTPM(t, attest.TPMOptions{SNP: host, SNPKDS: host.KDS})
	p.Reference.Images[0].SNPMeasurements = []attest.Hex{host.Measurement}
	p.SNP.TrustedRoots = host.Roots
	p.AllowSoftwareTPMUnsafe = false
	return c, p
}

// SimulatedTDXVTPM is SimulatedTPM as the vTPM of a TDX confidential VM
// (Compute Engine's shape): the collector asks s for a TDX quote with
// every TPM quote, its REPORTDATA as asked and then edit (if set) applied
// to the TD report, and is not labelled a software TPM. The policy lists
// the template's MRTD on the image, trusts s's test root, judges the TCB
// with s's UpToDate collateral, and refuses software TPMs.
func SimulatedTDXVTPM(t testing.TB, s *TDXSigner, edit func(*tdxpb.TDQuoteBody)) (*attest.TPMCollector, *attest.Policy) {
	t.Helper()
	c, p := simulatedTPM(t, attest.TPMOptions{TDX: func(rd [64]byte) ([]byte, error) {
		return s.Sign(func(b *tdxpb.TDQuoteBody) {
			b.ReportData = rd[:]
			if edit != nil {
				edit(b)
			}
		})
	}})
	coll, err := s.Collateral(CollateralOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Reference.Images[0].TDXMRTDs = []attest.Hex{s.Template().GetMrTd()}
	p.TrustedTDXRoots, p.TDXCollateral = s.Roots, coll
	p.AllowSoftwareTPMUnsafe = false
	return c, p
}

// simulatedTPM is a collector with opts (and BootLog as its event log) on
// a fresh simulator, and the Policy that admits it.
func simulatedTPM(t testing.TB, opts attest.TPMOptions) (*attest.TPMCollector, *attest.Policy) {
	t.Helper()
	sim := Simulator(t)
	p, err := Policy(sim)
	if err != nil {
		t.Fatal(err)
	}
	opts.EventLog = func() ([]byte, error) { return BootLog(), nil }
	c, err := attest.NewTPMCollector(sim, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, p
}
