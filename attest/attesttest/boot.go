// Package attesttest provides simulated machines for tests and the local
// demo: a TPM (the go-tpm-tools simulator in-process, or swtpm as a separate
// process) into which a real firmware event log is replayed, so that
// verification runs against real boot events, plus the matching policy.
//
// Nothing here is for production: machines are labelled as software TPMs
// and policies built here allow that label.
package attesttest

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"io"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	elt "github.com/google/go-eventlog/testdata"
	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// BootLog is the firmware event log replayed into simulated machines: a
// real crypto-agile TCG log from a RHEL 8 UEFI boot with Secure Boot on,
// shipped with go-eventlog's test data.
func BootLog() []byte { return elt.Rhel8EventLog }

// AgentDigest is the agent-start digest simulated agents record, and the one
// the policies built here allow.
var AgentDigest = sha256.Sum256([]byte("attested-runner test agent"))

// ReplayBootLog plays a firmware's role: it extends every measured event of
// a TCG event log into the TPM's SHA-256 PCR bank, in order. Afterwards the
// PCRs match what that firmware left on the machine that wrote the log.
func ReplayBootLog(rw io.ReadWriter, eventLog []byte) error {
	el, err := tcg.ParseEventLog(eventLog, tcg.ParseOpts{})
	if err != nil {
		return fmt.Errorf("parsing boot log: %w", err)
	}
	for i, e := range el.Events(register.HashSHA256) {
		if e.Type == tcg.NoAction {
			continue
		}
		if len(e.Digest) != sha256.Size {
			return fmt.Errorf("boot log event %d has no SHA-256 digest", i)
		}
		if err := tpm2.PCRExtend(rw, tpmutil.Handle(e.Index), tpm2.AlgSHA256, e.Digest, ""); err != nil {
			return fmt.Errorf("extending event %d into PCR %d: %w", i, e.Index, err)
		}
	}
	return nil
}

// BootPCRs are the PCRs the firmware boot covers, compared exactly by the
// reference images built here.
var BootPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14}

// ReferenceImage reads the SHA-256 values of BootPCRs from the TPM as
// reference values named id.
func ReferenceImage(rw io.ReadWriter, id string) (attest.Image, error) {
	pcrs, err := client.ReadPCRs(rw, tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: BootPCRs})
	if err != nil {
		return attest.Image{}, err
	}
	im := attest.Image{ID: id, PCRs: map[uint32]attest.Hex{}, SecureBoot: true}
	for i, v := range pcrs.GetPcrs() {
		im.PCRs[i] = v
	}
	return im, nil
}

// Policy builds the policy that admits this TPM after ReplayBootLog: its AK
// trusted by key (enrolled), the PCRs it holds now as the only image, and
// AgentDigest as the only agent. It allows the software-TPM label.
func Policy(rw io.ReadWriter) (*attest.Policy, error) {
	akSPKI, err := attest.AKPublic(rw)
	if err != nil {
		return nil, err
	}
	ak, err := x509.ParsePKIXPublicKey(akSPKI)
	if err != nil {
		return nil, err
	}
	im, err := ReferenceImage(rw, "test-image")
	if err != nil {
		return nil, err
	}
	return &attest.Policy{
		Reference: &attest.ReferenceValues{
			Format:       attest.ReferenceValuesFormat,
			Images:       []attest.Image{im},
			AgentDigests: []attest.Hex{AgentDigest[:]},
		},
		TrustedAKs:             []crypto.PublicKey{ak},
		AllowSoftwareTPMUnsafe: true,
	}, nil
}

// BootAgent runs the agent's first steps on a collector: agent-start,
// environment keys, env-key.
func BootAgent(c attest.Collector) error {
	if err := c.Extend(attest.AgentStartEvent(AgentDigest)); err != nil {
		return err
	}
	if err := c.GenerateKeys(); err != nil {
		return err
	}
	return c.Extend(attest.EnvKeyEvent(c.EnvKey(), c.HPKE().PublicKey()))
}
