// Package imageref computes a runner image's reference values offline: from
// the kernel, initrd and command line (or a signed unified kernel image),
// without booting, it predicts the TCG events a UEFI measured boot records
// and the PCR values those events alone determine, as the attest package's
// ReferenceValues (BuildEnv L2.ref-values).
//
// What it computes (docs/measured-boot.md has the event tables):
//   - AuthenticodeSHA256: the PE/COFF Authenticode digest firmware extends
//     into PCR 4 for an EFI application (checked against pesign);
//   - Compute: the kernel event (PCR 4; for a QEMU -kernel boot, of the image
//     with the setup-header fields QEMU writes), the LoadOptions and initrd
//     events the Linux EFI stub extends into PCR 9, and exact PCR 4 and 9;
//   - ComputeUKI: the same for a Secure Boot UKI: the UKI in PCR 4, its
//     sections in PCR 11 (systemd-stub), PCR 9 as above, Secure Boot required.
//
// It trusts its inputs: they are the image being published, not evidence.
// It checks sizes (MaxKernelSize, MaxInitrdSize, MaxPESize, ...) so a wrong
// path cannot exhaust memory. The predictions are pinned to the firmware,
// QEMU, kernel and systemd versions listed in docs/measured-boot.md; the
// QEMU e2e test (ATTESTED_E2E_QEMU=1) re-checks them against real boots.
//
// ParseSerialLog, ReplayEventLog and Check read what scripts/image/testinit
// printed in a test boot and compare it with a reference image. They are
// test tooling: the gate verifies evidence with attest.Verify.
package imageref
