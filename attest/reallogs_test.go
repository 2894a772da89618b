package attest_test

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	elt "github.com/google/go-eventlog/testdata"
)

// TestRealEventLogs verifies evidence whose TCG event log is a real one from
// go-eventlog's test data: each log is replayed into a fresh simulator
// (playing the firmware), quoted, and verified end to end.
//
// Not included, because a locality-0 simulator cannot reproduce them: the
// SHA-1-only debian-10 log (we verify the SHA-256 bank), and logs with an
// H-CRTM/DRTM start (gdc-host, glinux-alex, host-gmes: PCR 0 at locality 3
// or PCR 17).
func TestRealEventLogs(t *testing.T) {
	tests := []struct {
		name       string
		log        []byte
		secureBoot bool
		efiApps    int
		want       error
	}{
		{"rhel8", elt.Rhel8EventLog, true, 3, nil},
		{"ubuntu1804-sev", elt.Ubuntu1804AmdSevEventLog, false, 2, nil},
		{"ubuntu2104-nodbx", elt.Ubuntu2104NoDbxEventLog, false, 2, nil},
		{"ubuntu2104-nosb", elt.Ubuntu2104NoSecureBootEventLog, false, 2, nil},
		{"ubuntu2404-snp", elt.Ubuntu2404AmdSevSnpEventLog, false, 2, nil},
		{"ubuntu2404-tdx", elt.Ubuntu2404IntelTdxA4HighGpu8GEventLog, false, 1, nil},
		{"cos85", elt.Cos85AmdSevEventLog, true, 3, nil},
		{"cos93", elt.Cos93AmdSevEventLog, true, 3, nil},
		{"cos101", elt.Cos101AmdSevEventLog, true, 4, nil},
		{"cos121", elt.Cos121AmdSevEventLog, true, 3, nil},
		{"cos125-tdx-sb", elt.Cos125IntelTdxSecureBootA4HighGpu8GEventLog, true, 2, nil},
		// Its SecureBoot variable is empty; go-tpm-tools lists this as a
		// known parse failure. We fail closed.
		{"arch-linux", elt.ArchLinuxWorkstationEventLog, false, 0, attest.ErrEventLogReplay},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := attesttest.SimulatedMachineWithLog(t, tc.log)
			n := nonce(t)
			ev, err := m.Collector.Collect(attest.AdmissionChallenge(n))
			if err != nil {
				t.Fatal(err)
			}
			m.Policy.Reference.Images[0].SecureBoot = tc.secureBoot
			c, err := attest.Verify(ev, attest.AdmissionChallenge(n), m.Policy)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: got %v, want %v", err, tc.want)
			}
			if err != nil {
				return
			}
			if c.SecureBoot != tc.secureBoot || len(c.EFIApps) != tc.efiApps {
				t.Errorf("secure boot %v, %d EFI apps; want %v, %d", c.SecureBoot, len(c.EFIApps), tc.secureBoot, tc.efiApps)
			}
			if !tc.secureBoot {
				// An image that requires Secure Boot does not admit this boot.
				m.Policy.Reference.Images[0].SecureBoot = true
				_, err := attest.Verify(ev, attest.AdmissionChallenge(n), m.Policy)
				if !errors.Is(err, attest.ErrReferenceMismatch) || !strings.Contains(err.Error(), "Secure Boot") {
					t.Errorf("Secure Boot required: got %v, want %v", err, attest.ErrReferenceMismatch)
				}
			}
		})
	}
}

// TestReplayMatchesUpstream checks that replaying the RHEL 8 log reproduces
// the PCR values and EFI application digests go-tpm-tools records for that
// machine, so the simulated boot is faithful to the real one.
func TestReplayMatchesUpstream(t *testing.T) {
	m := attesttest.SimulatedMachineWithLog(t, elt.Rhel8EventLog)
	n := nonce(t)
	ev, err := m.Collector.Collect(attest.AdmissionChallenge(n))
	if err != nil {
		t.Fatal(err)
	}
	c, err := attest.Verify(ev, attest.AdmissionChallenge(n), m.Policy)
	if err != nil {
		t.Fatal(err)
	}
	// From go-tpm-tools server/eventlog_test.go, Rhel8GCE, SHA-256 bank.
	wantPCRs := map[uint32]string{
		0: "24af52a4f429b71a3184a6d64cddad17e54ea030e2aa6576bf3a5a3d8bd3328f",
		4: "758a3d35f1b0ff5b135dacd07db0c8132c0ac665d944090d4bf96e66447a245c",
		7: "5fd54361d580eb7592adb8deb236ff35444ceeac7148f24b3de63c041f12b3da",
		9: "d43b2f61eb18b4791812ff5f20ab20e4ef621ba683370bedf5dbdf518b3a8078",
	}
	for i, want := range wantPCRs {
		if got := hex.EncodeToString(c.PCRs[i]); got != want {
			t.Errorf("PCR %d = %s, want %s", i, got, want)
		}
	}
	wantApps := []string{
		"40d6cae02973789080cf4c3a9ad11b5a0a4d8bba4438ab96e276cc784454dee7",
		"e8a268c431da72caaae407f729f602b9dbf5d1d43492d4a51cc2b688a08586e3",
		"e4c0382f98feaebfd43923a85fd6da9a20e1a48524a4d5928c31850ca1a96a6e",
	}
	if len(c.EFIApps) != len(wantApps) {
		t.Fatalf("%d EFI apps, want %d", len(c.EFIApps), len(wantApps))
	}
	for i, want := range wantApps {
		if got := hex.EncodeToString(c.EFIApps[i]); got != want {
			t.Errorf("EFI app %d = %s, want %s", i, got, want)
		}
	}
}
