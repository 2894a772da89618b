// Command agentinit is /init (PID 1) of an agent image built by
// scripts/image/build.sh --agent. It prepares the measured initramfs for the
// attested-runner agent and runs it:
//
//  1. mounts proc, sysfs, securityfs (the TCG event log), devtmpfs
//     (/dev/tpmrm0, the console), and tmpfs on /run and /tmp;
//  2. loads the kernel modules the image lists, in order, with
//     finit_module(2) (the virtio NIC: Debian builds it as a module);
//  3. configures the network: DHCP (busybox udhcpc, which also writes
//     /etc/resolv.conf and renews the lease) or a static address;
//  4. sets up the scratch disk, if any: dm-crypt with a key made at boot
//     (kernel memory only), ext2, mounted for the job's work folder;
//  5. hands the runner directory (and any listed device) to the runner user;
//  6. starts the agent with the configured arguments and reaps orphans
//     until it exits;
//  7. powers the VM off if the agent ever returns (the agent normally powers
//     off itself at teardown with --poweroff-command reboot-syscall).
//
// Everything it runs and reads is in the initramfs, which the Linux EFI stub
// measures into PCR 9 before the kernel starts: the configuration
// (/etc/attested-runner/init.json), the modules and the agent binary are
// covered by the image's reference values. Progress lines on the console
// start with "agentinit:" and carry the kernel uptime; a failure prints
// "agentinit: FATAL ..." and powers off, so a boot never waits for the
// host's timeout.
package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// configPath is the init configuration build.sh writes.
const configPath = "/etc/attested-runner/init.json"

// maxConfig bounds the configuration file.
const maxConfig = 64 << 10

// Config is /etc/attested-runner/init.json. Unknown fields are errors.
type Config struct {
	// Modules are kernel module files (.ko) to load, dependencies first.
	Modules []string `json:"modules"`
	// OptionalModules are loaded after them where their hardware exists
	// (other clouds' NICs): a module that refuses to load is logged, not
	// fatal.
	OptionalModules []string `json:"optionalModules,omitempty"`
	// Network configures one interface (DHCP or static); nil leaves
	// networking down.
	Network *Network `json:"network,omitempty"`
	// Scratch, if set, is the encrypted disk for the job's work folder.
	Scratch *Scratch `json:"scratch,omitempty"`
	// RunnerDir is handed to the runner user (owner of the directory
	// itself, not of its contents: bin/ stays root's).
	RunnerDir string `json:"runnerDir"`
	// RunnerUser is "uid:gid".
	RunnerUser string `json:"runnerUser"`
	// RunnerDevices are device nodes handed to the runner user (test
	// images: a serial port the job exports results on). Production
	// images list none.
	RunnerDevices []string `json:"runnerDevices,omitempty"`
	// Agent is the agent's argv; Agent[0] is an absolute path.
	Agent []string `json:"agent"`
}

// Network is an IPv4 configuration: DHCP, or a static address.
type Network struct {
	Interface string `json:"interface"`
	// DHCP runs busybox udhcpc with Script (which configures the address,
	// the default route and /etc/resolv.conf from the lease); Address and
	// Gateway must then be empty.
	DHCP   bool   `json:"dhcp,omitempty"`
	Script string `json:"script,omitempty"`
	// Address in CIDR form, e.g. 10.0.2.15/24.
	Address string `json:"address,omitempty"`
	// Gateway for the default route; empty means no default route.
	Gateway string `json:"gateway,omitempty"`
}

var console io.Writer = os.Stdout

func main() {
	console = openConsole()
	if err := run(); err != nil {
		logf("FATAL %v", err)
	}
	powerOff()
}

func logf(format string, args ...any) {
	fmt.Fprintf(console, "agentinit: [%s] %s\n", uptime(), fmt.Sprintf(format, args...))
}

func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	if f := bytes.Fields(b); len(f) > 0 {
		return string(f[0])
	}
	return "?"
}

// openConsole returns the console the kernel gave init, or opens it after
// mounting devtmpfs if the initramfs had no /dev/console node.
func openConsole() io.Writer {
	if _, err := os.Stdout.Stat(); err == nil {
		return os.Stdout
	}
	_ = os.MkdirAll("/dev", 0o755)
	_ = unix.Mount("devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755")
	if f, err := os.OpenFile("/dev/console", os.O_RDWR, 0); err == nil {
		os.Stdout, os.Stderr = f, f
		return f
	}
	return io.Discard
}

func run() error {
	if err := mountAll(); err != nil {
		return err
	}
	logf("started: /proc, /sys, securityfs, /dev, /run, /tmp mounted")
	cfg, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	for _, m := range cfg.Modules {
		if err := loadModule(m); err != nil {
			return err
		}
	}
	optional := 0
	for _, m := range cfg.OptionalModules {
		if err := loadModule(m); err != nil {
			logf("optional module not loaded (not this platform): %v", err)
			continue
		}
		optional++
	}
	if len(cfg.Modules)+len(cfg.OptionalModules) > 0 {
		logf("loaded %d kernel modules, %d of %d optional ones", len(cfg.Modules), optional, len(cfg.OptionalModules))
	}
	if err := mountConfigfs(); err != nil {
		return err
	}
	if cfg.Network != nil {
		if err := configureNetwork(cfg.Network); err != nil {
			return fmt.Errorf("network: %w", err)
		}
	}
	uid, gid, err := parseUser(cfg.RunnerUser)
	if err != nil {
		return err
	}
	if cfg.Scratch != nil {
		if err := setupScratch(cfg.Scratch, uid, gid); err != nil {
			return fmt.Errorf("scratch disk: %w", err)
		}
	}
	for _, p := range append([]string{cfg.RunnerDir}, cfg.RunnerDevices...) {
		if err := os.Chown(p, uid, gid); err != nil {
			return fmt.Errorf("handing %s to the runner user: %w", p, err)
		}
	}
	return runAgent(cfg.Agent)
}

// mountConfigfs mounts configfs on /sys/kernel/config when the kernel has
// it (the directory exists once configfs is registered, built in or its
// module loaded): a TD's agent asks configfs-tsm for its quotes there.
func mountConfigfs() error {
	const dir = "/sys/kernel/config"
	if _, err := os.Stat(dir); err != nil {
		return nil
	}
	if err := unix.Mount("configfs", dir, "configfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount configfs on %s: %w", dir, err)
	}
	logf("configfs mounted on %s", dir)
	return nil
}

func mountAll() error {
	mounts := []struct {
		src, dir, fstype string
		flags            uintptr
		data             string
	}{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"securityfs", "/sys/kernel/security", "securityfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dir, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.dir, err)
		}
	}
	return nil
}

func loadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfig+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxConfig {
		return nil, fmt.Errorf("%s is over %d bytes", path, maxConfig)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case len(c.Agent) == 0 || !strings.HasPrefix(c.Agent[0], "/"):
		return nil, fmt.Errorf("%s: agent must be an argv with an absolute path first", path)
	case c.RunnerDir == "" || c.RunnerUser == "":
		return nil, fmt.Errorf("%s: runnerDir and runnerUser are required", path)
	}
	return &c, nil
}

func parseUser(s string) (int, int, error) {
	u, g, ok := strings.Cut(s, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil || uid <= 0 || gid <= 0 {
		return 0, 0, fmt.Errorf("runnerUser %q: want uid:gid, not root", s)
	}
	return uid, gid, nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("module: %w", err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("loading module %s: %w", path, err)
	}
	return nil
}

func configureNetwork(n *Network) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := linkUp(fd, "lo"); err != nil {
		return err
	}
	// The NIC appears when its driver module probes the PCI device; give a
	// slow (TCG-emulated) machine a moment.
	var ifi *net.Interface
	for deadline := time.Now().Add(10 * time.Second); ; {
		if ifi, err = net.InterfaceByName(n.Interface); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("interface %s: %w", n.Interface, err)
	}
	if n.DHCP {
		if n.Address != "" || n.Gateway != "" || !strings.HasPrefix(n.Script, "/") {
			return errors.New("dhcp needs an absolute script path and no static address or gateway")
		}
		if err := linkUp(fd, n.Interface); err != nil {
			return err
		}
		return startDHCP(n.Interface, n.Script)
	}
	ip, ipnet, err := net.ParseCIDR(n.Address)
	if err != nil || ip.To4() == nil {
		return fmt.Errorf("address %q: want IPv4 CIDR", n.Address)
	}
	for _, op := range []struct {
		req  uint
		addr net.IP
	}{{unix.SIOCSIFADDR, ip.To4()}, {unix.SIOCSIFNETMASK, net.IP(ipnet.Mask).To4()}} {
		ifr, err := unix.NewIfreq(n.Interface)
		if err != nil {
			return err
		}
		if err := ifr.SetInet4Addr(op.addr); err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, op.req, ifr); err != nil {
			return fmt.Errorf("%s: setting %s: %w", n.Interface, op.addr, err)
		}
	}
	if err := linkUp(fd, n.Interface); err != nil {
		return err
	}
	msg := fmt.Sprintf("%s up, %s", n.Interface, n.Address)
	if n.Gateway != "" {
		gw := net.ParseIP(n.Gateway).To4()
		if gw == nil {
			return fmt.Errorf("gateway %q: want IPv4", n.Gateway)
		}
		if err := addDefaultRoute(ifi.Index, gw); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
		msg += ", default via " + n.Gateway
	}
	logf("network: %s", msg)
	return nil
}

// dhcpBound is written by the udhcpc script once a lease is configured.
const dhcpBound = "/run/attested-runner/dhcp.bound"

// startDHCP starts busybox udhcpc in the foreground as a child of init (it
// keeps renewing the lease; PID 1 reaps it) and waits for the first lease.
func startDHCP(ifname, script string) error {
	null, err := os.Open("/dev/null")
	if err != nil {
		return err
	}
	defer null.Close()
	argv := []string{"/bin/busybox", "udhcpc", "-f", "-i", ifname, "-s", script, "-t", "10", "-T", "1", "-A", "3", "-x", "hostname:attested-runner"}
	if _, err := syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{
		Env:   []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "BOUND_FILE=" + dhcpBound},
		Files: []uintptr{null.Fd(), os.Stdout.Fd(), os.Stderr.Fd()},
	}); err != nil {
		return fmt.Errorf("starting udhcpc: %w", err)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if b, err := os.ReadFile(dhcpBound); err == nil {
			logf("network: %s by DHCP: %s", ifname, strings.TrimSpace(string(b)))
			return nil
		}
	}
	return fmt.Errorf("no DHCP lease on %s within 30 s", ifname)
}

func linkUp(fd int, name string) error {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s up: %w", name, err)
	}
	return nil
}

// addDefaultRoute sends one rtnetlink RTM_NEWROUTE (0.0.0.0/0 via gw on the
// interface) and waits for its acknowledgement.
func addDefaultRoute(ifindex int, gw net.IP) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ne := binary.NativeEndian
	msg := make([]byte, unix.SizeofNlMsghdr+unix.SizeofRtMsg+2*(unix.SizeofRtAttr+4))
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], unix.RTM_NEWROUTE)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL)
	ne.PutUint32(msg[8:], 1) // sequence number
	rt := msg[unix.SizeofNlMsghdr:]
	rt[0] = unix.AF_INET
	rt[4] = unix.RT_TABLE_MAIN
	rt[5] = unix.RTPROT_BOOT
	rt[6] = unix.RT_SCOPE_UNIVERSE
	rt[7] = unix.RTN_UNICAST
	attr := rt[unix.SizeofRtMsg:]
	ne.PutUint16(attr[0:], unix.SizeofRtAttr+4)
	ne.PutUint16(attr[2:], unix.RTA_GATEWAY)
	copy(attr[4:8], gw.To4())
	ne.PutUint16(attr[8:], unix.SizeofRtAttr+4)
	ne.PutUint16(attr[10:], unix.RTA_OIF)
	ne.PutUint32(attr[12:], uint32(ifindex))
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			if errno := int32(ne.Uint32(m.Data[:4])); errno != 0 {
				return unix.Errno(-errno)
			}
			return nil
		}
	}
	return errors.New("no acknowledgement from rtnetlink")
}

// runAgent starts the agent and, as PID 1 must, reaps every orphan until
// the agent itself exits.
func runAgent(argv []string) error {
	logf("starting the agent: %s", strings.Join(argv, " "))
	null, err := os.Open("/dev/null")
	if err != nil {
		return err
	}
	defer null.Close()
	pid, err := syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{
		Dir:   "/",
		Env:   []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"},
		Files: []uintptr{null.Fd(), os.Stdout.Fd(), os.Stderr.Fd()},
	})
	if err != nil {
		return fmt.Errorf("starting %s: %w", argv[0], err)
	}
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("waiting for the agent: %w", err)
		}
		if got != pid {
			continue
		}
		if ws.Exited() {
			logf("agent exited with status %d", ws.ExitStatus())
		} else {
			logf("agent ended: %v", ws.Signal())
		}
		return nil
	}
}

func powerOff() {
	logf("powering off")
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Only reached if reboot(2) failed: PID 1 must not exit (the kernel
	// would panic), so say why and wait for the host's timeout.
	fmt.Fprintf(console, "agentinit: FATAL power off: %v\n", err)
	for {
		time.Sleep(time.Hour)
	}
}
