// Package qemu holds the real measured-boot end-to-end tests: the runner
// image built by scripts/image/build.sh --agent boots under QEMU (TCG) with
// OVMF and swtpm, its attested-runner agent reads the real TCG event log
// from securityfs and quotes with the swtpm-backed /dev/tpmrm0, and an
// in-process gate admits or refuses it against reference values that
// internal/imageref computed offline from the image files.
//
// The host side runs, in the test process, the fake GitHub API
// (e2e/fakegithub) and a gate built from a real configuration file exactly
// as `jobgate serve` builds it. The guest reaches both through QEMU
// user-network forwards (10.0.2.100:8443 for the gate, 10.0.2.100:8080 for
// GitHub; see scripts/image/boot.sh --forward), and exports the job's
// provenance bundle on its second serial port.
//
// What the tests trust: the image files they built, the swtpm attestation
// key they read before the first boot (enrolled in the gate as a trusted
// AK), and the host's QEMU/OVMF/swtpm. What they check: everything the gate
// and the consumer verifier check, on evidence produced by a real boot.
//
// The tests run only with ATTESTED_E2E_QEMU=1 (make test-qemu) and need
// qemu-system-x86, ovmf, swtpm, cpio, binutils, dpkg, apt access (or a
// warm build cache), and for the Secure Boot case sbsigntool,
// systemd-boot-efi, dosfstools, mtools and openssl. docs/measured-boot.md
// describes the flow and the timings.
package qemu
