package harness

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"github.com/attested-runner/attested-runner/internal/fileio"
	"io"
	"os"
	"path/filepath"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/internal/ekca"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// MachineOptions configure a simulated machine.
type MachineOptions struct {
	// BootLog is the firmware's TCG event log; nil means
	// attesttest.BootLog() (a real RHEL 8 UEFI boot with Secure Boot).
	BootLog []byte
	// SecureBootOff says the BootLog's firmware ran without Secure Boot,
	// so reference values derived from this machine do not require it.
	SecureBootOff bool
	// EKCA, if set, manufactures the fresh TPM as a fleet does: an RSA EK
	// certificate of this CA in its NV (ekca.Provision), for admission by
	// EK credential activation with no AK enrolled by hand.
	EKCA *ekca.CA
}

// Machine is a simulated machine: a software TPM (one swtpm process) on
// which "firmware" has run (the boot log replayed into its PCRs), with its
// event log where the agent reads it and its attestation key exported for
// enrollment. It is powered on until Close.
type Machine struct {
	Name string
	// Dir holds the machine's files; the TPM state is Dir/tpm (mode 0700).
	Dir string
	TPM *attesttest.SWTPM
	// BootLog is the firmware event log replayed at each boot;
	// EventLogPath is the same log as a file (the agent's --event-log,
	// standing in for securityfs).
	BootLog      []byte
	EventLogPath string
	secureBoot   bool
	// AK is the attestation key's SubjectPublicKeyInfo, AKPath the same as
	// PEM: what an admin enrolls in the gate's policy.trustedAKs.
	AK     []byte
	AKPath string
	// EKCert is the EK certificate (DER) MachineOptions.EKCA wrote, if any.
	EKCert []byte
}

// NewMachine powers on a machine in dir: swtpm starts with a fresh TPM
// (new seeds, so a new AK), the firmware boot is replayed into it, and its
// AK is read out for enrollment.
func NewMachine(ctx context.Context, dir, name string, o MachineOptions) (*Machine, error) {
	if o.BootLog == nil {
		o.BootLog = attesttest.BootLog()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	m := &Machine{Name: name, Dir: dir, BootLog: o.BootLog, secureBoot: !o.SecureBootOff,
		EventLogPath: filepath.Join(dir, "binary_bios_measurements"), AKPath: filepath.Join(dir, "ak.pem")}
	if err := fileio.WriteFileAtomic(m.EventLogPath, o.BootLog, 0o644); err != nil {
		return nil, err
	}
	tpm, err := attesttest.BootSWTPM(ctx, filepath.Join(dir, "tpm"), o.BootLog)
	if err != nil {
		return nil, fmt.Errorf("machine %s: %w", name, err)
	}
	m.TPM = tpm
	if err := tpm.With(func(rw io.ReadWriter) error {
		if o.EKCA != nil {
			if m.EKCert, err = ekca.Provision(rw, o.EKCA, ekca.RSA); err != nil {
				return fmt.Errorf("manufacturing the EK certificate: %w", err)
			}
		}
		m.AK, err = attest.AKPublic(rw)
		return err
	}); err != nil {
		tpm.Stop()
		return nil, fmt.Errorf("machine %s: reading the AK: %w", name, err)
	}
	if err := fileio.WriteFileAtomic(m.AKPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: m.AK}), 0o644); err != nil {
		tpm.Stop()
		return nil, err
	}
	return m, nil
}

// TPMArg is the agent's --tpm value for this machine.
func (m *Machine) TPMArg() string { return "unix:" + m.TPM.Socket }

// ReferenceImage reads the machine's boot PCRs as reference values named
// id: what an image build's reference-value extraction would publish for
// the firmware and boot chain this machine ran. Call it before an agent
// runs (the agent owns the TPM while it lives).
func (m *Machine) ReferenceImage(id string) (attest.Image, error) {
	var im attest.Image
	err := m.TPM.With(func(rw io.ReadWriter) error {
		var err error
		im, err = attesttest.ReferenceImage(rw, id)
		return err
	})
	im.SecureBoot = m.secureBoot
	return im, err
}

// ExtendPCR extends SHA-256(data) into a PCR without logging it: what a
// boot component measuring something the event log does not show (or an
// attacker with TPM access after boot) leaves behind.
func (m *Machine) ExtendPCR(pcr int, data []byte) error {
	d := sha256.Sum256(data)
	return m.TPM.With(func(rw io.ReadWriter) error {
		return tpm2.PCRExtend(rw, tpmutil.Handle(pcr), tpm2.AlgSHA256, d[:], "")
	})
}

// Reboot power-cycles the machine: the same TPM (same AK: it stays
// enrolled), PCRs reset, the firmware boot replayed again. A destroyed VM
// booted afresh on its vTPM.
func (m *Machine) Reboot(ctx context.Context) error {
	if err := m.TPM.Restart(ctx); err != nil {
		return err
	}
	return m.TPM.Replay(m.BootLog)
}

// Close powers the machine off (stops swtpm). Its files stay.
func (m *Machine) Close() error { return m.TPM.Stop() }

// Collector opens the machine's TPM in this process the way the agent
// does, and runs the agent's boot steps with agentDigest as the agent's
// measurement: agent-start, environment keys, env-key. Tests use it to play
// an agent that does what the real one never would (present its key twice,
// reuse a nonce). Close the returned function before an agent runs.
func (m *Machine) Collector(agentDigest [sha256.Size]byte) (*attest.TPMCollector, func(), error) {
	conn, err := m.TPM.Dial()
	if err != nil {
		return nil, nil, err
	}
	c, err := attest.NewTPMCollector(conn, attest.TPMOptions{
		EventLog:    func() ([]byte, error) { return m.BootLog, nil },
		SoftwareTPM: true,
	})
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	closeAll := func() { c.Close(); conn.Close() }
	if err := c.Extend(attest.AgentStartEvent(agentDigest)); err != nil {
		closeAll()
		return nil, nil, err
	}
	if err := c.GenerateKeys(); err != nil {
		closeAll()
		return nil, nil, err
	}
	if err := c.Extend(attest.EnvKeyEvent(c.EnvKey(), c.HPKE().PublicKey())); err != nil {
		closeAll()
		return nil, nil, err
	}
	return c, closeAll, nil
}

// WriteReferenceValues writes a reference-values document (the format the
// gate loads: attest.ReferenceValuesFormat) allowing these images and agent
// binaries.
func WriteReferenceValues(path string, images []attest.Image, agentDigests ...[sha256.Size]byte) error {
	rv := attest.ReferenceValues{Format: attest.ReferenceValuesFormat, Images: images}
	for _, d := range agentDigests {
		rv.AgentDigests = append(rv.AgentDigests, attest.Hex(d[:]))
	}
	if err := rv.Validate(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rv, "", "  ")
	if err != nil {
		return err
	}
	return fileio.WriteFileAtomic(path, append(b, '\n'), 0o644)
}
