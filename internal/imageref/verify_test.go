//go:build cgo

package imageref

import (
	"crypto"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/google/go-eventlog/extract"
	"github.com/google/go-eventlog/tcg"
)

// TestGateAcceptsRealBootWithComputedReference plays the real -kernel boot's
// event log into a TPM simulator (standing in for the swtpm the guest used)
// and runs the gate's attest.Verify with the offline reference image: the
// log must replay, the events and PCRs 4 and 9 must match, and a -kernel
// boot needs Policy.DirectKernelBoot.
func TestGateAcceptsRealBootWithComputedReference(t *testing.T) {
	r := realReport(t)
	tests := []struct {
		name       string
		directBoot bool
		tamper     func(*attest.Image)
		want       error
	}{
		{"computed reference, DirectKernelBoot", true, nil, nil},
		{"without DirectKernelBoot", false, nil, attest.ErrEventLogReplay},
		{"other command line", true, func(im *attest.Image) {
			im.Events[1].Digest = digest(LoadOptions("console=ttyS0 init=/bin/sh" + qemuInitrdOption))
		}, attest.ErrReferenceMismatch},
		{"Secure Boot required", true, func(im *attest.Image) { im.SecureBoot = true }, attest.ErrReferenceMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := attesttest.SimulatedMachineWithLog(t, r.EventLog)
			img := realImage(t)
			if tc.tamper != nil {
				tc.tamper(img)
			}
			m.Policy.Reference.Images = []attest.Image{*img}
			m.Policy.DirectKernelBoot = tc.directBoot
			n := make([]byte, 32)
			if _, err := rand.Read(n); err != nil {
				t.Fatal(err)
			}
			ev, err := m.Collector.Collect(attest.AdmissionChallenge(n))
			if err != nil {
				t.Fatal(err)
			}
			c, err := attest.Verify(ev, attest.AdmissionChallenge(n), m.Policy)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
			if err != nil {
				return
			}
			if c.ImageID != "real" || c.SecureBoot || len(c.EFIApps) != 1 || string(c.EFIApps[0]) != string(unhex(t, realKernelEvent)) {
				t.Errorf("claims: image %q, secure boot %v, EFI apps %x", c.ImageID, c.SecureBoot, c.EFIApps)
			}
		})
	}
}

// TestFirmwareLogStateDirectBoot records what go-eventlog's extractor (the
// one go-tpm-tools' server.VerifyAttestation runs) needs for a -kernel boot:
// OVMF measures the kernel before "Calling EFI Application from Boot
// Option", which the extractor rejects unless AllowEFIAppBeforeCallingEvent.
func TestFirmwareLogStateDirectBoot(t *testing.T) {
	r := realReport(t)
	evs, err := tcg.ParseAndReplay(r.EventLog, pcrMRs(r.PCRs), tcg.ParseOpts{})
	if err != nil {
		t.Fatal(err)
	}
	for _, allow := range []bool{false, true} {
		fs, err := extract.FirmwareLogState(evs, crypto.SHA256, extract.TPMRegisterConfig, extract.Opts{
			Loader:                        extract.UnsupportedLoader,
			AllowEFIAppBeforeCallingEvent: allow,
		})
		if !allow {
			if err == nil {
				t.Error("extractor accepted the kernel before the Calling EFI Application event")
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		apps := fs.GetEfi().GetApps()
		if len(apps) != 1 || string(apps[0].GetDigest()) != string(unhex(t, realKernelEvent)) {
			t.Errorf("EFI apps %v", apps)
		}
		if fs.GetSecureBoot().GetEnabled() {
			t.Error("Secure Boot reported enabled for a -kernel boot with OVMF_CODE_4M.fd")
		}
	}
}

// Values of the Secure Boot boot in testdata/uki-secureboot-serial.log: the
// image of qemu-direct-serial.log wrapped by scripts/image/uki.sh and signed
// with the snakeoil key, booted with OVMF_CODE_4M.secboot.fd and
// OVMF_VARS_4M.snakeoil.fd.
const (
	realUKIDigest = "dd9b2ccc46c30d38185ead45dc156fdb2ed4d497b818f7174dad1d9cb531a4d3"
	realVmlinuz   = "85667e6c72245133bd7e3e80bac7d16b26fda15c0a3c68faa4b713850ea526cd"
	realOSRel     = "fb19b5b7f372e319e7d5b5ceca528aa745d7f99073fa86bb5d4d9b924a369018"
	realCmdlineF  = "7b0d45515923b92b9e42a255fc280a03c4bab1f304e7fe828b205b0228964cde"
)

// realUKIImage is what ComputeUKI gives for that UKI, built from the
// digests of its parts (the 9 MiB UKI is not in testdata).
func realUKIImage(t testing.TB) *attest.Image {
	t.Helper()
	img := &attest.Image{ID: "uki", SecureBoot: true, PCRs: map[uint32]attest.Hex{},
		Events: []attest.EventRef{{PCR: 4, Digest: unhex(t, realUKIDigest), Description: DescUKI}}}
	var pcr11 [][]byte
	for _, s := range []struct{ name, content string }{
		{".linux", realVmlinuz}, {".osrel", realOSRel}, {".cmdline", realCmdlineF}, {".initrd", realInitrdDigest},
	} {
		n, c := digest([]byte(s.name+"\x00")), unhex(t, s.content)
		pcr11 = append(pcr11, n, c)
		img.Events = append(img.Events, attest.EventRef{PCR: 11, Digest: n}, attest.EventRef{PCR: 11, Digest: c})
	}
	// Under systemd-stub the kernel gets .cmdline as is: no " initrd=initrd".
	lo := digest(LoadOptions(realCmdline))
	img.Events = append(img.Events, attest.EventRef{PCR: 9, Digest: lo, Description: DescLoadOptions},
		attest.EventRef{PCR: 9, Digest: unhex(t, realInitrdDigest), Description: DescInitrd})
	img.PCRs[9] = replay(lo, unhex(t, realInitrdDigest))
	img.PCRs[11] = replay(pcr11...)
	return img
}

func ukiReport(t testing.TB) *BootReport { return serialReport(t, "uki-secureboot-serial.log") }

// TestGateAcceptsSecureBootUKI: the UKI boot needs no DirectKernelBoot
// relaxation, shows Secure Boot enabled, and matches the UKI reference
// (PCR 4 app, PCR 11 sections, PCR 9 command line and initrd).
func TestGateAcceptsSecureBootUKI(t *testing.T) {
	r := ukiReport(t)
	mm, err := Check(realUKIImage(t), r)
	if err != nil {
		t.Fatal(err)
	}
	if len(mm) != 0 {
		t.Fatalf("UKI boot does not match its reference: %v", mm)
	}
	m := attesttest.SimulatedMachineWithLog(t, r.EventLog)
	m.Policy.Reference.Images = []attest.Image{*realUKIImage(t)}
	n := make([]byte, 32)
	if _, err := rand.Read(n); err != nil {
		t.Fatal(err)
	}
	ev, err := m.Collector.Collect(attest.AdmissionChallenge(n))
	if err != nil {
		t.Fatal(err)
	}
	c, err := attest.Verify(ev, attest.AdmissionChallenge(n), m.Policy)
	if err != nil {
		t.Fatal(err)
	}
	if !c.SecureBoot || len(c.EFIApps) != 1 || string(c.EFIApps[0]) != string(unhex(t, realUKIDigest)) {
		t.Errorf("claims: secure boot %v, EFI apps %x", c.SecureBoot, c.EFIApps)
	}
}
