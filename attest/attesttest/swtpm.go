package attesttest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ErrNoSWTPM is returned when the swtpm program is not installed.
var ErrNoSWTPM = errors.New("swtpm is not installed: install the Debian/Ubuntu package \"swtpm\" (apt-get install swtpm swtpm-tools, or scripts/prereqs.sh)")

// maxUnixPath is the longest path a unix socket can be bound at on Linux
// (sockaddr_un.sun_path is 108 bytes, NUL included).
const maxUnixPath = 107

// SWTPM is a software TPM 2.0 (swtpm) running as its own process: the TPM
// of one simulated machine, reached over a unix socket. A plain net.Conn to
// Socket is an io.ReadWriter for go-tpm-tools and for the agent
// (--tpm unix:PATH). swtpm serves one connection at a time: close yours
// before another party connects.
//
// The TPM's persistent state (its seeds, hence its endorsement and
// attestation keys) lives in Dir, so Restart is a power cycle of the same
// machine: same AK, PCRs reset. Evidence from it is a software TPM's and
// must be labelled so (attest.TPMOptions.SoftwareTPM).
type SWTPM struct {
	// Dir holds the TPM state, the sockets and swtpm's log (mode 0700).
	Dir string
	// Socket is the TPM command socket (mode 0600: root, or whoever runs
	// swtpm, only).
	Socket string

	ctrl string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// SWTPMBinary returns the path of the swtpm program, or ErrNoSWTPM.
func SWTPMBinary() (string, error) {
	p, err := exec.LookPath("swtpm")
	if err != nil {
		return "", ErrNoSWTPM
	}
	return p, nil
}

// RequireSWTPM returns the path of swtpm for a test that needs it. Where
// swtpm is not installed it skips t, saying how to install it; with
// ATTESTED_REQUIRE_SWTPM=1 (.ci/run sets it, after installing swtpm) it
// fails t instead, so a machine missing the package cannot pass by
// skipping.
func RequireSWTPM(t testing.TB) string {
	t.Helper()
	bin, err := SWTPMBinary()
	if err != nil {
		if os.Getenv("ATTESTED_REQUIRE_SWTPM") == "1" {
			t.Fatalf("ATTESTED_REQUIRE_SWTPM=1: %v", err)
		}
		t.Skip(err)
	}
	return bin
}

// StartSWTPM starts a TPM whose state lives in dir (created 0700 if
// missing; an empty dir is a freshly manufactured TPM with new seeds) and
// waits until it accepts connections. The TPM is started up (TPM2_Startup
// CLEAR) by swtpm itself: it is a machine just powered on, all PCRs zero.
func StartSWTPM(ctx context.Context, dir string) (*SWTPM, error) {
	bin, err := SWTPMBinary()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	s := &SWTPM{Dir: dir, Socket: filepath.Join(dir, "tpm.sock"), ctrl: filepath.Join(dir, "tpm.ctrl")}
	if len(s.ctrl) > maxUnixPath {
		return nil, fmt.Errorf("swtpm: socket path %s is longer than %d bytes: use a shorter directory", s.ctrl, maxUnixPath)
	}
	if err := s.start(ctx, bin); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *SWTPM) start(ctx context.Context, bin string) error {
	for _, p := range []string{s.Socket, s.ctrl} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	logf, err := os.OpenFile(filepath.Join(s.Dir, "swtpm.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "socket", "--tpm2",
		"--server", "type=unixio,path="+s.Socket+",mode=0600",
		"--ctrl", "type=unixio,path="+s.ctrl+",mode=0600",
		"--tpmstate", "dir="+s.Dir+",mode=0600",
		"--flags", "not-need-init,startup-clear")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C meant for a test or demo does not
	// kill the TPM under an agent that is still tearing down.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting swtpm: %w", err)
	}
	s.cmd, s.done, s.err = cmd, make(chan struct{}), nil
	go func(done chan struct{}) {
		s.err = cmd.Wait()
		close(done)
	}(s.done)
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return err
	}
	return nil
}

// waitReady polls until the command socket accepts a connection, the
// process exits, or ctx (at most 15 s) ends.
func (s *SWTPM) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if c, err := net.Dial("unix", s.Socket); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("swtpm exited at start (%v): %s", s.err, s.logTail())
		case <-ctx.Done():
			return fmt.Errorf("swtpm did not open %s: %w; log: %s", s.Socket, ctx.Err(), s.logTail())
		case <-tick.C:
		}
	}
}

func (s *SWTPM) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "swtpm.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// Dial opens a connection to the TPM. Close it before anyone else (an
// agent) needs the TPM.
func (s *SWTPM) Dial() (net.Conn, error) {
	return net.Dial("unix", s.Socket)
}

// Pid is the swtpm process id (0 when stopped).
func (s *SWTPM) Pid() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Stop ends swtpm: SIGTERM (swtpm saves its state), SIGKILL after 5 s.
// Idempotent.
func (s *SWTPM) Stop() error {
	if s.cmd == nil {
		return nil
	}
	select {
	case <-s.done:
	default:
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	}
	s.cmd = nil
	return nil
}

// Restart power-cycles the TPM: the same state (seeds, AK) and fresh PCRs,
// as a VM that is destroyed and booted again on the same vTPM.
func (s *SWTPM) Restart(ctx context.Context) error {
	bin, err := SWTPMBinary()
	if err != nil {
		return err
	}
	s.Stop()
	return s.start(ctx, bin)
}

// BootSWTPM starts a TPM in dir and plays the firmware: it replays
// eventLog (nil: BootLog) into its PCRs, leaving the PCRs that firmware
// would have left.
func BootSWTPM(ctx context.Context, dir string, eventLog []byte) (*SWTPM, error) {
	s, err := StartSWTPM(ctx, dir)
	if err != nil {
		return nil, err
	}
	if err := s.Replay(eventLog); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Replay replays eventLog (nil: BootLog) into the TPM, over its own
// connection.
func (s *SWTPM) Replay(eventLog []byte) error {
	if eventLog == nil {
		eventLog = BootLog()
	}
	return s.With(func(rw io.ReadWriter) error { return ReplayBootLog(rw, eventLog) })
}

// With runs f on a fresh connection to the TPM and closes it afterwards.
func (s *SWTPM) With(f func(rw io.ReadWriter) error) error {
	c, err := s.Dial()
	if err != nil {
		return fmt.Errorf("connecting to swtpm: %w", err)
	}
	defer c.Close()
	return f(c)
}
