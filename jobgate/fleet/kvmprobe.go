package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// kvmProbeTimeout bounds the probe: a working KVM runs the probe firmware
// in milliseconds, a hanging one never returns.
const kvmProbeTimeout = 10 * time.Second

// probeBIOS is a 64 KiB firmware whose reset vector (the last 16 bytes)
// initialises the FPU, writes 0x31 to I/O port 0xf4 and halts:
//
//	fwait ; fninit ; mov al, 0x31 ; out 0xf4, al ; hlt ; hlt ; jmp $-3
//
// With -device isa-debug-exit QEMU exits with status (0x31<<1)|1 = 99.
// The FPU instruction matters: on a host whose KVM runs port I/O but
// fails to emulate FPU instructions ("KVM internal error ... emulation
// failure", where OVMF's first FPU use pauses the guest forever), a probe
// without it succeeds and every real VM hangs.
func probeBIOS() []byte {
	b := make([]byte, 64<<10)
	copy(b[len(b)-16:], []byte{0x9b, 0xdb, 0xe3, 0xb0, 0x31, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd})
	return b
}

// probeExit is QEMU's status when the probe firmware ran.
const probeExit = 99

// ProbeKVM reports whether QEMU can run a guest under KVM on this host:
// nil when a tiny firmware ran to completion under -accel kvm within
// kvmProbeTimeout. A host where /dev/kvm exists but KVM hangs or fails
// gets an error saying which.
func ProbeKVM(ctx context.Context, qemu, dir string) error {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return fmt.Errorf("kvm probe: %w", err)
	}
	return probe(ctx, qemu, dir, "kvm")
}

// probe runs the probe firmware under accel.
func probe(ctx context.Context, qemu, dir, accel string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("kvm probe: %w", err)
	}
	bios := filepath.Join(dir, "probe.bin")
	if err := os.WriteFile(bios, probeBIOS(), 0o600); err != nil {
		return fmt.Errorf("kvm probe: %w", err)
	}
	defer os.Remove(bios)
	ctx, cancel := context.WithTimeout(ctx, kvmProbeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-accel", accel, "-machine", "pc", "-nodefaults", "-display", "none",
		"-m", "16", "-bios", bios, "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04")
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return fmt.Errorf("kvm probe: QEMU under -accel %s did not finish in %s (it hangs on this host)", accel, kvmProbeTimeout)
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == probeExit {
		return nil
	}
	if err == nil {
		return errors.New("kvm probe: QEMU exited without running the probe firmware")
	}
	return fmt.Errorf("kvm probe: %v: %s", err, firstLine(out))
}

func firstLine(b []byte) string {
	for i, c := range b {
		if c == '\n' {
			return string(b[:i])
		}
	}
	return string(b)
}
