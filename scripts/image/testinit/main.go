// Command testinit is a tiny /init for the measured-boot test image. It runs
// as PID 1 in the initramfs, prints what the firmware and kernel measured on
// the serial console, and powers the VM off:
//
//	ATTESTED-TESTINIT-BEGIN
//	ATTESTED-CMDLINE <kernel command line>
//	ATTESTED-PCR sha256 <index> <hex>          (PCR 0-23, when sysfs has them)
//	ATTESTED-EVENTLOG-BEGIN <size>
//	<base64 of binary_bios_measurements, 76-column lines>
//	ATTESTED-EVENTLOG-END sha256:<hex of the log>
//	ATTESTED-UPTIME <seconds since the kernel started>
//	ATTESTED-TESTINIT-END
//
// Any failure prints "ATTESTED-ERROR <reason>" and still powers off, so a
// boot never hangs until the host's timeout. The host side of this format is
// scripts/image/boot.sh and internal/imageref (ParseSerialLog).
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/attested-runner/attested-runner/internal/fileio"
)

const (
	eventLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"
	pcrDir       = "/sys/class/tpm/tpm0/pcr-sha256"
	// maxEventLog bounds what we read; real logs are 20-60 KiB.
	maxEventLog = 1 << 20
)

func main() {
	out := console()
	fmt.Fprintln(out, "ATTESTED-TESTINIT-BEGIN")
	if err := run(out); err != nil {
		fmt.Fprintf(out, "ATTESTED-ERROR %v\n", err)
	}
	fmt.Fprintln(out, "ATTESTED-TESTINIT-END")
	powerOff(out)
}

// console returns the serial console. The kernel normally hands init
// /dev/console as stdout; if the initramfs lacked the node, mount devtmpfs
// and open it ourselves.
func console() io.Writer {
	if _, err := os.Stdout.Stat(); err == nil {
		return os.Stdout
	}
	_ = os.MkdirAll("/dev", 0o755)
	_ = syscall.Mount("devtmpfs", "/dev", "devtmpfs", 0, "")
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		return f
	}
	return io.Discard
}

func run(out io.Writer) error {
	mounts := []struct{ src, dir, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"securityfs", "/sys/kernel/security", "securityfs"},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := syscall.Mount(m.src, m.dir, m.fstype, 0, ""); err != nil && err != syscall.EBUSY {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.dir, err)
		}
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "ATTESTED-CMDLINE %s\n", strings.TrimRight(string(cmdline), "\n"))

	// The TPM driver is built in and probes before init runs, but give a
	// slow (TCG-emulated) machine a moment before calling it missing.
	var log []byte
	for deadline := time.Now().Add(10 * time.Second); ; {
		log, err = fileio.ReadFile(eventLogPath, maxEventLog)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	for i := 0; i < 24; i++ {
		v, err := os.ReadFile(fmt.Sprintf("%s/%d", pcrDir, i))
		if err != nil {
			break // kernels before 5.12 have no pcr-sha256 directory
		}
		fmt.Fprintf(out, "ATTESTED-PCR sha256 %d %s\n", i, strings.ToLower(strings.TrimSpace(string(v))))
	}
	fmt.Fprintf(out, "ATTESTED-EVENTLOG-BEGIN %d\n", len(log))
	enc := base64.StdEncoding.EncodeToString(log)
	for len(enc) > 0 {
		n := min(76, len(enc))
		fmt.Fprintln(out, enc[:n])
		enc = enc[n:]
	}
	fmt.Fprintf(out, "ATTESTED-EVENTLOG-END sha256:%x\n", sha256.Sum256(log))
	if up, err := os.ReadFile("/proc/uptime"); err == nil {
		fmt.Fprintf(out, "ATTESTED-UPTIME %s\n", string(bytes.Fields(up)[0]))
	}
	return nil
}

func powerOff(out io.Writer) {
	syscall.Sync()
	err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	// Only reached if the reboot call failed: PID 1 must not exit (the
	// kernel would panic), so say why and wait for the host's timeout.
	fmt.Fprintf(out, "ATTESTED-ERROR power off: %v\n", err)
	for {
		time.Sleep(time.Hour)
	}
}
