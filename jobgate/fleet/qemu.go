package fleet

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/ekca"
	"github.com/attested-runner/attested-runner/internal/fileio"
	"github.com/google/go-tpm/legacy/tpm2"
)

// QEMUConfig runs a pool's VMs as QEMU processes on the gate's host: one
// QEMU, OVMF and swtpm per VM. The fleet makes each VM's TPM itself, so
// no admin enrolls anything. Without EKCA it reads the TPM's attestation
// key before the VM boots and the gate trusts that AK for that VM only;
// with EKCA it manufactures the TPM with an EK certificate of the fleet's
// own EK CA, and the VM proves its AK by credential activation.
type QEMUConfig struct {
	// StateDir holds one directory per VM (boot files, TPM state, console
	// log); required.
	StateDir string `json:"stateDir"`
	// MemoryMiB (default 2048) and CPUs (default 2) of each VM. The
	// reference values of a -kernel boot depend on MemoryMiB (refvalues
	// --memory).
	MemoryMiB int `json:"memoryMiB,omitempty"`
	CPUs      int `json:"cpus,omitempty"`
	// Accel: "auto" (default: KVM when a bounded probe shows it works,
	// else TCG), "kvm" or "tcg".
	Accel string `json:"accel,omitempty"`
	// Network: "user" (default: QEMU's NAT to the host's network, which
	// a runner needs to reach GitHub) or "restricted" (restrict=on: the
	// guest reaches only Forwards).
	Network string `json:"network,omitempty"`
	// Forwards GUEST_IP:PORT=HOST:PORT relay guest connections to the
	// host (e.g. the gate URL baked into the image, 10.0.2.100:8443).
	Forwards []string `json:"forwards,omitempty"`
	// ScratchMiB, if set, attaches an empty disk of that size as the
	// guest's /dev/vda (build.sh --scratch /dev/vda), created per VM.
	ScratchMiB int `json:"scratchMiB,omitempty"`
	// SecureBoot boots the UKI with OVMF's Secure Boot firmware and vars
	// (OVMFCode/OVMFVars must then enroll the UKI's signer).
	SecureBoot bool `json:"secureBoot,omitempty"`
	// Firmware and programs (defaults: Debian's paths and PATH).
	OVMFCode string `json:"ovmfCode,omitempty"`
	OVMFVars string `json:"ovmfVars,omitempty"`
	QEMU     string `json:"qemu,omitempty"`
	SWTPM    string `json:"swtpm,omitempty"`
	// Relay is the guestfwd relay program, run as "RELAY HOST:PORT"
	// (default: socat, else "jobgate stdio-relay").
	Relay string `json:"relay,omitempty"`
	// EKCA is the directory of the fleet's local EK CA (ek-ca.pem and a
	// 0600 ek-ca-key.pem; created on first use). Each VM's fresh swtpm
	// gets an RSA 2048 EK certificate it signs, in NV 0x01c00002 (TCG EK
	// Credential Profile), written and locked before the VM boots; the
	// pool trusts this CA, and its VMs are admitted only by EK credential
	// activation (agent --ek-activation).
	EKCA string `json:"ekCA,omitempty"`
	// KeepFiles keeps a destroyed VM's directory (console log, TPM state)
	// for inspection.
	KeepFiles bool `json:"keepFiles,omitempty"`
}

var forwardRe = regexp.MustCompile(`^([0-9.]+):([0-9]+)=([0-9A-Za-z.-]+):([0-9]+)$`)

func (q *QEMUConfig) validate() error {
	if !filepath.IsAbs(q.StateDir) {
		return fmt.Errorf("qemu.stateDir %q: want an absolute directory", q.StateDir)
	}
	if q.MemoryMiB == 0 {
		q.MemoryMiB = 2048
	}
	if q.CPUs == 0 {
		q.CPUs = 2
	}
	switch q.Accel {
	case "":
		q.Accel = "auto"
	case "auto", "kvm", "tcg":
	default:
		return fmt.Errorf("qemu.accel %q: want auto, kvm or tcg", q.Accel)
	}
	switch q.Network {
	case "":
		q.Network = "user"
	case "user", "restricted":
	default:
		return fmt.Errorf("qemu.network %q: want user or restricted", q.Network)
	}
	for _, f := range q.Forwards {
		if !forwardRe.MatchString(f) {
			return fmt.Errorf("qemu.forwards %q: want GUEST_IP:PORT=HOST:PORT", f)
		}
	}
	if q.MemoryMiB < 256 || q.CPUs < 1 || q.ScratchMiB < 0 {
		return errors.New("qemu: memoryMiB >= 256, cpus >= 1, scratchMiB >= 0")
	}
	if q.OVMFCode == "" {
		q.OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
		if q.SecureBoot {
			q.OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
		}
	}
	if q.OVMFVars == "" {
		q.OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
		if q.SecureBoot {
			q.OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd"
		}
	}
	if q.QEMU == "" {
		q.QEMU = "qemu-system-x86_64"
	}
	if q.SWTPM == "" {
		q.SWTPM = "swtpm"
	}
	return nil
}

// QEMU is the qemu Provider of one pool.
type QEMU struct {
	cfg   *QEMUConfig
	pool  string
	accel string
	relay []string
	// ekCA, if set, manufactures every VM's TPM (QEMUConfig.EKCA).
	ekCA *ekca.CA

	mu  sync.Mutex
	vms map[string]*qemuVM
}

type qemuVM struct {
	dir    string
	qemu   *exec.Cmd
	swtpm  *exec.Cmd
	exited chan struct{}
}

// NewQEMU checks the host (programs, firmware, KVM) and returns the
// provider. The KVM probe is bounded: a host where /dev/kvm exists but
// KVM hangs (no VMX/SVM) falls back to TCG.
func NewQEMU(ctx context.Context, pool string, cfg *QEMUConfig) (*QEMU, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	for _, prog := range []string{cfg.QEMU, cfg.SWTPM} {
		if _, err := exec.LookPath(prog); err != nil {
			return nil, fmt.Errorf("qemu provider: %s: %w (apt-get install qemu-system-x86 swtpm)", prog, err)
		}
	}
	for _, f := range []string{cfg.OVMFCode, cfg.OVMFVars} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("qemu provider: firmware: %w (apt-get install ovmf)", err)
		}
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	q := &QEMU{cfg: cfg, pool: pool, vms: map[string]*qemuVM{}}
	if cfg.EKCA != "" {
		ca, err := ekca.LoadOrCreate(cfg.EKCA, "attested-runner fleet EK CA ("+pool+")")
		if err != nil {
			return nil, fmt.Errorf("qemu provider: ekCA: %w", err)
		}
		q.ekCA = ca
	}
	switch cfg.Relay {
	case "":
		if _, err := exec.LookPath("socat"); err == nil {
			q.relay = []string{"socat", "STDIO"}
		} else if self, err := os.Executable(); err == nil {
			q.relay = []string{self, "stdio-relay"}
		}
	default:
		q.relay = []string{cfg.Relay}
	}
	q.accel = cfg.Accel
	if q.accel == "auto" {
		q.accel = "tcg"
		if ProbeKVM(ctx, cfg.QEMU, filepath.Join(cfg.StateDir, ".kvm-probe")) == nil {
			q.accel = "kvm"
		}
	}
	return q, nil
}

// Kind implements Provider.
func (q *QEMU) Kind() string { return "qemu" }

// Accel is the accelerator the provider uses ("kvm" or "tcg").
func (q *QEMU) Accel() string { return q.accel }

// Launch implements Provider: the verified boot files into the VM's
// directory, a fresh swtpm whose AK is read before boot, then QEMU with
// the VM's name in fw_cfg (opt/attested-runner/vm).
func (q *QEMU) Launch(ctx context.Context, req *LaunchRequest) (*Launched, error) {
	dir := filepath.Join(q.cfg.StateDir, req.Name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("VM directory: %w", err)
	}
	for name, data := range req.Boot.Files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	tpmState := filepath.Join(dir, "tpm")
	if err := os.Mkdir(tpmState, 0o700); err != nil {
		return nil, err
	}
	var ak crypto.PublicKey
	var err error
	if q.ekCA != nil {
		// Manufactured like a TPM from a vendor: the gate trusts its EK
		// certificate, and the agent proves its AK by activation.
		err = ProvisionSWTPM(ctx, q.cfg.SWTPM, dir, tpmState, func(rw io.ReadWriter) error {
			_, err := ekca.Provision(rw, q.ekCA, ekca.RSA)
			return err
		})
	} else {
		ak, err = q.readAK(ctx, dir, tpmState)
	}
	if err != nil {
		return nil, fmt.Errorf("the VM's TPM: %w", err)
	}
	vars, err := os.ReadFile(q.cfg.OVMFVars)
	if err != nil {
		return nil, err
	}
	if err := fileio.WriteFileAtomic(filepath.Join(dir, "vars.fd"), vars, 0o600); err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "swtpm.sock")
	swtpm := exec.Command(q.cfg.SWTPM, "socket", "--tpm2", "--ctrl", "type=unixio,path="+sock,
		"--tpmstate", "dir="+tpmState, "--terminate", "--log", "file="+filepath.Join(dir, "swtpm.log")+",level=1")
	swtpm.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := swtpm.Start(); err != nil {
		return nil, fmt.Errorf("swtpm: %w", err)
	}
	if err := waitFor(sock, 5*time.Second); err != nil {
		swtpm.Process.Kill()
		return nil, fmt.Errorf("swtpm: %w", err)
	}
	args, err := q.args(req, dir, sock)
	if err != nil {
		swtpm.Process.Kill()
		return nil, err
	}
	qemu := exec.Command(q.cfg.QEMU, args...)
	qemu.Dir = dir
	qemu.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := os.OpenFile(filepath.Join(dir, "qemu.out"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		swtpm.Process.Kill()
		return nil, err
	}
	qemu.Stdout, qemu.Stderr = out, out
	if err := qemu.Start(); err != nil {
		out.Close()
		swtpm.Process.Kill()
		return nil, fmt.Errorf("starting QEMU: %w", err)
	}
	out.Close()
	vm := &qemuVM{dir: dir, qemu: qemu, swtpm: swtpm, exited: make(chan struct{})}
	go func() {
		qemu.Wait()
		close(vm.exited)
		swtpm.Process.Kill()
		swtpm.Wait()
	}()
	q.mu.Lock()
	q.vms[req.Name] = vm
	q.mu.Unlock()
	return &Launched{AK: ak}, nil
}

// EKRoots implements EKAuthority: the fleet's EK CA, if configured.
func (q *QEMU) EKRoots() []*x509.Certificate {
	if q.ekCA == nil {
		return nil
	}
	return []*x509.Certificate{q.ekCA.Cert}
}

// readAK starts the VM's swtpm alone, reads the attestation key the agent
// will use (the same primary key, derived from the endorsement seed in the
// state directory) and stops it with an orderly shutdown.
func (q *QEMU) readAK(ctx context.Context, dir, state string) (crypto.PublicKey, error) {
	var spki []byte
	err := ProvisionSWTPM(ctx, q.cfg.SWTPM, dir, state, func(rw io.ReadWriter) (err error) {
		spki, err = attest.AKPublic(rw)
		return err
	})
	if err != nil {
		return nil, err
	}
	return parseKey(spki)
}

// ProvisionSWTPM starts swtpm (the program swtpmBin) alone on the TPM
// state directory state, before its VM exists, runs f on it (the fleet's
// manufacturing: read the AK, write an EK certificate) and stops it with
// an orderly shutdown so that swtpm stores the state. Its sockets live in
// dir.
func ProvisionSWTPM(ctx context.Context, swtpmBin, dir, state string, f func(io.ReadWriter) error) error {
	srv, ctrl := filepath.Join(dir, "enroll.sock"), filepath.Join(dir, "enroll.ctrl")
	cmd := exec.CommandContext(ctx, swtpmBin, "socket", "--tpm2", "--server", "type=unixio,path="+srv,
		"--ctrl", "type=unixio,path="+ctrl, "--tpmstate", "dir="+state, "--flags", "not-need-init,startup-clear")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		os.Remove(srv)
		os.Remove(ctrl)
	}()
	conn, err := dialListening(srv, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := f(conn); err != nil {
		return err
	}
	// An orderly shutdown, so swtpm stores its state before it exits.
	return tpm2.Shutdown(conn, tpm2.StartupClear)
}

func (q *QEMU) args(req *LaunchRequest, dir, sock string) ([]string, error) {
	c := q.cfg
	machine := "q35"
	if c.SecureBoot {
		machine = "q35,smm=on"
	}
	args := []string{"-machine", machine, "-accel", q.accel, "-smp", strconv.Itoa(c.CPUs), "-m", strconv.Itoa(c.MemoryMiB),
		"-nographic", "-no-reboot", "-monitor", "none", "-serial", "file:" + filepath.Join(dir, "console.log"),
		"-drive", "if=pflash,format=raw,readonly=on,file=" + c.OVMFCode,
		"-drive", "if=pflash,format=raw,file=" + filepath.Join(dir, "vars.fd"),
		"-chardev", "socket,id=chrtpm,path=" + sock, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0",
		"-fw_cfg", "name=opt/attested-runner/vm,string=" + req.Name,
	}
	if c.SecureBoot {
		args = append(args, "-global", "driver=cfi.pflash01,property=secure,value=on")
	}
	netdev := "user,id=net0"
	if c.Network == "restricted" {
		netdev += ",restrict=on"
	}
	for _, f := range c.Forwards {
		m := forwardRe.FindStringSubmatch(f)
		if len(q.relay) == 0 {
			return nil, errors.New("qemu.forwards need a relay: install socat or set qemu.relay")
		}
		cmd := strings.Join(append(append([]string{}, q.relay...), m[3]+":"+m[4]), " ")
		if q.relay[0] == "socat" {
			cmd = "socat STDIO TCP:" + m[3] + ":" + m[4]
		}
		if strings.ContainsAny(cmd, ",'\"") {
			return nil, fmt.Errorf("relay command %q must not contain commas or quotes", cmd)
		}
		netdev += ",guestfwd=tcp:" + m[1] + ":" + m[2] + "-cmd:" + cmd
	}
	args = append(args, "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0,romfile=")
	if c.ScratchMiB > 0 {
		disk := filepath.Join(dir, "scratch.img")
		f, err := os.OpenFile(disk, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
		if err != nil {
			return nil, err
		}
		err = f.Truncate(int64(c.ScratchMiB) << 20)
		f.Close()
		if err != nil {
			return nil, err
		}
		args = append(args, "-drive", "if=none,id=scratch,format=raw,file="+disk, "-device", "virtio-blk-pci,drive=scratch")
	}
	switch req.Boot.Boot {
	case "qemu-direct":
		cmdline := strings.TrimSpace(string(req.Boot.Files["cmdline"]))
		args = append(args, "-kernel", filepath.Join(dir, "vmlinuz"), "-initrd", filepath.Join(dir, "initrd.img"), "-append", cmdline)
	case "uki":
		esp, err := makeESP(dir, req.Boot.Files["uki.efi"])
		if err != nil {
			return nil, err
		}
		args = append(args, "-drive", "if=none,id=esp,format=raw,file="+esp, "-device", "virtio-blk-pci,drive=esp,bootindex=0")
	default:
		return nil, fmt.Errorf("boot %q", req.Boot.Boot)
	}
	return args, nil
}

// makeESP writes a FAT EFI system partition image holding the UKI as the
// removable-media boot path (\EFI\BOOT\BOOTX64.EFI).
func makeESP(dir string, uki []byte) (string, error) {
	ukiPath := filepath.Join(dir, "uki.efi")
	esp := filepath.Join(dir, "esp.img")
	size := (len(uki)>>20 + 16)
	f, err := os.Create(esp)
	if err != nil {
		return "", err
	}
	err = f.Truncate(int64(size) << 20)
	f.Close()
	if err != nil {
		return "", err
	}
	for _, c := range [][]string{
		{"mkfs.vfat", "-n", "ESP", esp},
		{"mmd", "-i", esp, "::/EFI", "::/EFI/BOOT"},
		{"mcopy", "-i", esp, ukiPath, "::/EFI/BOOT/BOOTX64.EFI"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("%s: %v: %s (apt-get install dosfstools mtools)", c[0], err, out)
		}
	}
	return esp, nil
}

// Destroy implements Provider: QEMU and swtpm are killed and the VM's
// directory removed (unless KeepFiles).
func (q *QEMU) Destroy(_ context.Context, name string) error {
	q.mu.Lock()
	vm := q.vms[name]
	delete(q.vms, name)
	q.mu.Unlock()
	dir := filepath.Join(q.cfg.StateDir, name)
	if vm != nil {
		vm.qemu.Process.Signal(syscall.SIGTERM)
		select {
		case <-vm.exited:
		case <-time.After(5 * time.Second):
			syscall.Kill(-vm.qemu.Process.Pid, syscall.SIGKILL)
			<-vm.exited
		}
	}
	if q.cfg.KeepFiles {
		return nil
	}
	if filepath.Dir(dir) != filepath.Clean(q.cfg.StateDir) {
		return fmt.Errorf("VM name %q leaves the state directory", name)
	}
	return os.RemoveAll(dir)
}

// List implements Provider: the VMs whose QEMU still runs.
func (q *QEMU) List(context.Context) ([]Instance, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []Instance
	for name, vm := range q.vms {
		select {
		case <-vm.exited:
		default:
			out = append(out, Instance{Name: name, Running: true})
		}
	}
	return out, nil
}

// Console returns a VM's serial console so far (tests, admins).
func (q *QEMU) Console(name string) ([]byte, error) {
	return fileio.ReadFile(filepath.Join(q.cfg.StateDir, name, "console.log"), 16<<20)
}

// dialListening connects to the unix socket at path once its server
// listens: the file appears at bind(2), before listen(2), so a busy
// machine can refuse a connection in between.
func dialListening(path string, max time.Duration) (net.Conn, error) {
	for deadline := time.Now().Add(max); ; time.Sleep(20 * time.Millisecond) {
		conn, err := net.Dial("unix", path)
		if err == nil {
			return conn, nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("nothing listening on %s within %s: %w", path, max, err)
		}
	}
}

func waitFor(path string, max time.Duration) error {
	for deadline := time.Now().Add(max); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %s", path, max)
		}
	}
}
