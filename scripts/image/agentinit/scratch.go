package main

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Scratch is a disk for the job's work folder, encrypted with a key made at
// boot that exists only in the kernel's memory (dm-crypt, plain mode,
// aes-xts-plain64 with a 512-bit random key): what the job writes there is
// unreadable once the VM is off, and nothing about the key is stored.
type Scratch struct {
	// Device is the disk, e.g. /dev/vdb. Its previous contents are lost.
	Device string `json:"device"`
	// Mount is where the encrypted file system is mounted.
	Mount string `json:"mount"`
	// WorkDir is created under Mount for the runner user (the JIT
	// configuration's work folder points at it).
	WorkDir string `json:"workDir"`
}

func (s *Scratch) validate() error {
	for _, p := range []string{s.Device, s.Mount, s.WorkDir} {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			return fmt.Errorf("scratch: %q is not a clean absolute path", p)
		}
	}
	if !strings.HasPrefix(s.WorkDir, s.Mount+"/") {
		return fmt.Errorf("scratch: workDir %s is not under mount %s", s.WorkDir, s.Mount)
	}
	return nil
}

// The device-mapper ioctl interface (linux/dm-ioctl.h, version 4).
const (
	dmName          = "attested-scratch"
	dmIoctlSize     = 312 // sizeof(struct dm_ioctl)
	dmTargetSpec    = 40  // sizeof(struct dm_target_spec)
	dmDevCreate     = 0xC138FD03
	dmDevSuspend    = 0xC138FD06
	dmTableLoad     = 0xC138FD09
	dmSecureData    = 1 << 15 // DM_SECURE_DATA_FLAG: the kernel wipes the buffer
	dmReadWrite     = 0
	blkGetSize64    = 0x80081272
	scratchCipher   = "aes-xts-plain64"
	scratchKeyBytes = 64
)

// setupScratch maps Device through dm-crypt with a fresh random key, makes
// an ext2 file system on it (busybox mke2fs) and mounts it nosuid, nodev at
// Mount, with WorkDir owned by the runner user.
func setupScratch(s *Scratch, uid, gid int) error {
	if err := s.validate(); err != nil {
		return err
	}
	var dev *os.File
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if dev, err = os.OpenFile(s.Device, os.O_RDWR, 0); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("scratch device: %w", err)
	}
	var size uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, dev.Fd(), blkGetSize64, uintptr(unsafe.Pointer(&size))); e != 0 {
		dev.Close()
		return fmt.Errorf("scratch device %s: size: %w", s.Device, e)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(dev.Fd()), &st); err != nil {
		dev.Close()
		return err
	}
	dev.Close()
	if size < 16<<20 {
		return fmt.Errorf("scratch device %s is %d bytes: too small", s.Device, size)
	}
	ctl, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("device-mapper control (is dm_mod loaded?): %w", err)
	}
	defer ctl.Close()
	if _, err := dmIoctl(ctl, dmDevCreate, 0, nil); err != nil {
		return fmt.Errorf("creating %s: %w", dmName, err)
	}
	key := make([]byte, scratchKeyBytes)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	params := []byte(fmt.Sprintf("%s %s 0 %d:%d 0", scratchCipher, hex.EncodeToString(key), unix.Major(st.Rdev), unix.Minor(st.Rdev)))
	clear(key)
	spec := make([]byte, dmTargetSpec, dmTargetSpec+len(params)+8)
	binary.NativeEndian.PutUint64(spec[0:], 0)          // sector_start
	binary.NativeEndian.PutUint64(spec[8:], size/512)   // length
	copy(spec[24:40], "crypt")                          // target_type
	spec = append(spec, params...)                      // the parameter string,
	spec = append(spec, make([]byte, 8-len(spec)%8)...) // NUL-terminated and 8-aligned
	binary.NativeEndian.PutUint32(spec[20:], uint32(len(spec)))
	clear(params)
	_, err = dmIoctl(ctl, dmTableLoad, dmSecureData, spec)
	clear(spec)
	if err != nil {
		return fmt.Errorf("loading the crypt table (are dm_crypt, ecb and xts loaded?): %w", err)
	}
	if _, err := dmIoctl(ctl, dmDevSuspend, 0, nil); err != nil { // resume
		return fmt.Errorf("activating %s: %w", dmName, err)
	}
	mapped, err := dmDevice(dmName)
	if err != nil {
		return err
	}
	if out, err := exec.Command("/bin/busybox", "mke2fs", "-F", "-q", "-m", "0", mapped).CombinedOutput(); err != nil {
		// busybox mke2fs has no -q; retry without it.
		if out2, err2 := exec.Command("/bin/busybox", "mke2fs", "-F", "-m", "0", mapped).CombinedOutput(); err2 != nil {
			return fmt.Errorf("mke2fs %s: %v: %s%s", mapped, err2, out, out2)
		}
	}
	if err := os.MkdirAll(s.Mount, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(mapped, s.Mount, "ext2", unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("mounting %s on %s: %w", mapped, s.Mount, err)
	}
	if err := os.MkdirAll(s.WorkDir, 0o755); err != nil {
		return err
	}
	if err := os.Chown(s.WorkDir, uid, gid); err != nil {
		return err
	}
	logf("scratch: %s encrypted (%s, key made at boot, in kernel memory only) as %s, ext2 on %s, %d MiB", s.Device, scratchCipher, mapped, s.Mount, size>>20)
	return nil
}

// dmIoctl issues one device-mapper command for dmName with an optional
// payload after the header.
func dmIoctl(ctl *os.File, cmd uintptr, flags uint32, payload []byte) ([]byte, error) {
	buf := make([]byte, dmIoctlSize+len(payload)+4096)
	ne := binary.NativeEndian
	ne.PutUint32(buf[0:], 4) // version 4.0.0
	ne.PutUint32(buf[12:], uint32(len(buf)))
	ne.PutUint32(buf[16:], dmIoctlSize) // data_start
	if payload != nil {
		ne.PutUint32(buf[20:], 1) // target_count
	}
	ne.PutUint32(buf[28:], flags)
	copy(buf[48:48+128], dmName)
	copy(buf[dmIoctlSize:], payload)
	_, _, e := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), cmd, uintptr(unsafe.Pointer(&buf[0])))
	clear(buf[dmIoctlSize:])
	if e != 0 {
		return nil, e
	}
	return buf[:dmIoctlSize], nil
}

// dmDevice finds the /dev/dm-N node of a mapped device by its name.
func dmDevice(name string) (string, error) {
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		dirs, _ := filepath.Glob("/sys/block/dm-*")
		for _, d := range dirs {
			if b, err := os.ReadFile(filepath.Join(d, "dm", "name")); err == nil && strings.TrimSpace(string(b)) == name {
				node := "/dev/" + filepath.Base(d)
				if _, err := os.Stat(node); err == nil {
					return node, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no device node for %s", name)
		}
	}
}
