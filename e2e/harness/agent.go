package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/attested-runner/attested-runner/internal/fileio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// AgentOptions configure an agent. Zero durations take values fit for
// tests (the agent's own defaults are minutes).
type AgentOptions struct {
	// Name names the agent's directory (default: the machine's name).
	Name string
	// Machine is the machine the agent boots on (required).
	Machine *Machine
	// GateURL is where the agent finds the gate (required).
	GateURL string
	// GateKey is the PEM file of the gate keys the agent pins (required).
	GateKey string
	// RunnerUser is the unprivileged "uid:gid" the runner and the job run
	// as; empty means this process's own uid:gid. Another uid needs root.
	RunnerUser string
	// IdleTTL (default 30 s), AdmissionDeadline (30 s), TeardownDeadline
	// (15 s), JobTimeout (2 min).
	IdleTTL, AdmissionDeadline, TeardownDeadline, JobTimeout time.Duration
	// Labels the agent asks the gate for.
	Labels []string
	// RunnerRoot is the tmpfs directory the runner directory is created in
	// (default /dev/shm). If it holds a staged listener (StageListener),
	// the runner directory gets a hard link to it instead of a copy.
	RunnerRoot string
	// EKActivation passes --ek-activation: the agent proves its AK by
	// credential activation of its TPM's certified EK.
	EKActivation bool
}

// Agent is attested-runner running as a process on a Machine, with a
// runner directory on tmpfs (/dev/shm) holding the fake Runner.Listener.
type Agent struct {
	Name string
	// Dir holds the agent's files: state/ (hooks, dispatch attestation,
	// the agent socket), agent.log (its JSON log), agent.out (its one-line
	// outcome) and powered-off (created by its power-off command).
	Dir, StateDir, Socket, LogPath, OutPath, PowerOffPath string
	// RunnerDir is the GitHub runner's directory (tmpfs): bin/, _diag/,
	// _work/ (job workspaces), the decoded JIT configuration files.
	RunnerDir string
	Machine   *Machine
	Started   time.Time

	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	exit *AgentExit
}

// AgentExit is how an agent process ended.
type AgentExit struct {
	// Code is the exit status (-1 when killed by a signal).
	Code   int
	Signal string
	// Summary is the agent's outcome line, e.g. "attested-runner: job
	// completed (admitted true, job true, deregistered true)".
	Summary string
	// PoweredOff reports whether the agent ran its power-off command.
	PoweredOff bool
	Duration   time.Duration
}

// StartAgent starts an agent in dir. Its runner directory is a new
// directory under o.RunnerRoot (tmpfs), owned by the runner user.
func StartAgent(bin *Binaries, dir string, o AgentOptions) (*Agent, error) {
	if o.Machine == nil || o.GateURL == "" || o.GateKey == "" {
		return nil, errors.New("agent: a machine, a gate URL and the gate's key are required")
	}
	if o.Name == "" {
		o.Name = o.Machine.Name
	}
	if o.RunnerUser == "" {
		o.RunnerUser = fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid())
	}
	uid, gid, err := parseUIDGID(o.RunnerUser)
	if err != nil {
		return nil, err
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.IdleTTL, 30*time.Second)
	def(&o.AdmissionDeadline, 30*time.Second)
	def(&o.TeardownDeadline, 15*time.Second)
	def(&o.JobTimeout, 2*time.Minute)

	// Directories the runner user must traverse (the hooks and the socket
	// live in StateDir) are 0755.
	a := &Agent{Name: o.Name, Dir: dir, Machine: o.Machine}
	a.StateDir = filepath.Join(dir, "state")
	a.Socket = filepath.Join(a.StateDir, "agent.sock")
	a.LogPath, a.OutPath = filepath.Join(dir, "agent.log"), filepath.Join(dir, "agent.out")
	a.PowerOffPath = filepath.Join(dir, "powered-off")
	if err := os.MkdirAll(a.StateDir, 0o755); err != nil {
		return nil, err
	}
	for _, d := range []string{dir, a.StateDir} {
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, err
		}
	}
	if strings.ContainsAny(a.PowerOffPath, " \t\n") {
		return nil, fmt.Errorf("agent directory %q must not contain spaces", dir)
	}
	if o.RunnerRoot == "" {
		o.RunnerRoot = "/dev/shm"
	}
	a.RunnerDir, err = os.MkdirTemp(o.RunnerRoot, "runner-"+o.Name+"-")
	if err != nil {
		return nil, fmt.Errorf("runner directory on tmpfs: %w", err)
	}
	if err := installListener(bin.Listener, o.RunnerRoot, a.RunnerDir, uid, gid); err != nil {
		os.RemoveAll(a.RunnerDir)
		return nil, err
	}
	args := []string{"run",
		"--gate", o.GateURL,
		"--gate-key", o.GateKey,
		"--tpm", o.Machine.TPMArg(),
		"--event-log", o.Machine.EventLogPath,
		"--runner-dir", a.RunnerDir,
		"--runner-user", o.RunnerUser,
		"--socket", a.Socket,
		"--state-dir", a.StateDir,
		"--poweroff-command", "touch " + a.PowerOffPath,
		"--idle-ttl", o.IdleTTL.String(),
		"--admission-deadline", o.AdmissionDeadline.String(),
		"--teardown-deadline", o.TeardownDeadline.String(),
		"--job-timeout", o.JobTimeout.String(),
		"--log-format", "json",
	}
	if len(o.Labels) > 0 {
		args = append(args, "--labels", strings.Join(o.Labels, ","))
	}
	if o.EKActivation {
		args = append(args, "--ek-activation")
	}
	logf, err := os.OpenFile(a.LogPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		os.RemoveAll(a.RunnerDir)
		return nil, err
	}
	defer logf.Close()
	outf, err := os.OpenFile(a.OutPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		os.RemoveAll(a.RunnerDir)
		return nil, err
	}
	defer outf.Close()
	cmd := exec.Command(bin.Agent, args...)
	cmd.Stdout, cmd.Stderr = outf, logf
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	a.Started = time.Now()
	if err := cmd.Start(); err != nil {
		os.RemoveAll(a.RunnerDir)
		return nil, fmt.Errorf("starting the agent: %w", err)
	}
	a.cmd, a.done = cmd, make(chan struct{})
	go func() {
		err := cmd.Wait()
		code, sig := exitStatus(err)
		out, _ := os.ReadFile(a.OutPath)
		_, perr := os.Stat(a.PowerOffPath)
		a.mu.Lock()
		a.exit = &AgentExit{Code: code, Signal: sig, Summary: strings.TrimSpace(string(out)), PoweredOff: perr == nil, Duration: time.Since(a.Started)}
		a.mu.Unlock()
		close(a.done)
	}()
	return a, nil
}

func parseUIDGID(s string) (int, int, error) {
	u, g, ok := strings.Cut(s, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("runner user %q: want uid:gid", s)
	}
	return uid, gid, nil
}

// stagedListener is the name of a listener copy staged in a runner root.
const stagedListener = ".Runner.Listener"

// StageListener copies the fake listener into root (tmpfs), so that runner
// directories created there link it instead of copying 10 MB each.
func StageListener(bin *Binaries, root string) error {
	b, err := os.ReadFile(bin.Listener)
	if err != nil {
		return err
	}
	return fileio.WriteFileAtomic(filepath.Join(root, stagedListener), b, 0o755)
}

// installListener puts the fake listener at dir/bin/Runner.Listener (a hard
// link to a copy staged in root, or a copy) and gives the runner directory
// to the runner user, as an image would: the directory is the runner's, its
// program root's.
func installListener(listener, root, dir string, uid, gid int) error {
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return err
	}
	exe := filepath.Join(dir, "bin", "Runner.Listener")
	if err := os.Link(filepath.Join(root, stagedListener), exe); err != nil {
		b, err := os.ReadFile(listener)
		if err != nil {
			return err
		}
		if err := os.WriteFile(exe, b, 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if uid == os.Getuid() && gid == os.Getgid() {
		return nil
	}
	return os.Lchown(dir, uid, gid)
}

// Pid is the agent's process id.
func (a *Agent) Pid() int { return a.cmd.Process.Pid }

// Done is closed when the agent process has exited.
func (a *Agent) Done() <-chan struct{} { return a.done }

// Wait waits for the agent to exit (or ctx to end) and returns how.
func (a *Agent) Wait(ctx context.Context) (*AgentExit, error) {
	select {
	case <-a.done:
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.exit, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("agent %s still running: %w; log tail: %s", a.Name, ctx.Err(), tail(a.LogPath, 1500))
	}
}

// Kill SIGKILLs the agent and every process below it (the runner, the job):
// a VM that vanishes, with no teardown.
func (a *Agent) Kill() {
	select {
	case <-a.done:
	default:
		// Its children are found while it lives (they are reparented
		// when it dies); the agent itself is signalled through its pidfd.
		procs := descendants(a.cmd.Process.Pid)
		a.cmd.Process.Kill()
		for _, p := range procs {
			syscall.Kill(p, syscall.SIGKILL)
		}
		<-a.done
	}
	killRunnerProcesses(a.RunnerDir)
}

// Stop asks the agent to end (SIGTERM: it tears down, deregisters and
// powers off) and waits up to grace before killing what is left.
func (a *Agent) Stop(grace time.Duration) {
	select {
	case <-a.done:
	default:
		a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(grace):
		}
	}
	a.Kill()
}

// Close stops the agent and removes its runner directory (tmpfs), keeping
// the runner's _diag logs in Dir/_diag. Its other files stay in Dir.
func (a *Agent) Close() {
	a.Stop(20 * time.Second)
	files, _ := filepath.Glob(filepath.Join(a.RunnerDir, "_diag", "*.log"))
	if len(files) > 0 && os.MkdirAll(filepath.Join(a.Dir, "_diag"), 0o755) == nil {
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil {
				os.WriteFile(filepath.Join(a.Dir, "_diag", filepath.Base(f)), b, 0o644)
			}
		}
	}
	os.RemoveAll(a.RunnerDir)
}

// Workspace is the job workspace of a repository ("owner/name") in the
// runner directory (GITHUB_WORKSPACE).
func (a *Agent) Workspace(repo string) string {
	name := repo[strings.LastIndex(repo, "/")+1:]
	return filepath.Join(a.RunnerDir, "_work", name, name)
}

// LogRecords parses the agent's JSON log.
func (a *Agent) LogRecords() ([]map[string]any, error) { return jsonLog(a.LogPath) }

// WaitLog waits until the agent logs a record whose message is msg, and
// returns it. It fails early if the agent exits first.
func (a *Agent) WaitLog(ctx context.Context, msg string, max time.Duration) (map[string]any, error) {
	var found map[string]any
	ctx, cancel := context.WithTimeout(ctx, max)
	defer cancel()
	err := poll(ctx, 20*time.Millisecond, func() (bool, error) {
		recs, _ := a.LogRecords()
		for _, r := range recs {
			if r["msg"] == msg {
				found = r
				return true, nil
			}
		}
		select {
		case <-a.done:
			return false, fmt.Errorf("agent %s exited before logging %q: %s", a.Name, msg, tail(a.LogPath, 1500))
		default:
		}
		return false, nil
	})
	if err != nil && found == nil {
		return nil, fmt.Errorf("waiting for agent %s to log %q: %w", a.Name, msg, err)
	}
	return found, nil
}

// RunnerName is the runner name the gate admitted the agent as, from its
// log ("" before admission).
func (a *Agent) RunnerName() string {
	recs, _ := a.LogRecords()
	for _, r := range recs {
		if r["msg"] == "admitted" {
			s, _ := r["runner"].(string)
			return s
		}
	}
	return ""
}

// ListenerOutput returns the runner's terminal lines the agent logged.
func (a *Agent) ListenerOutput() string {
	recs, _ := a.LogRecords()
	var b bytes.Buffer
	for _, r := range recs {
		if r["msg"] == "runner" {
			fmt.Fprintln(&b, r["line"])
		}
	}
	return b.String()
}

// DiagLogs returns the runner's _diag logs concatenated (Runner_*.log,
// Worker_*.log): what the job printed.
func (a *Agent) DiagLogs() string {
	files, _ := filepath.Glob(filepath.Join(a.RunnerDir, "_diag", "*.log"))
	var b bytes.Buffer
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "==> %s\n", filepath.Base(f))
		io.Copy(&b, io.LimitReader(fh, 1<<20))
		fh.Close()
	}
	return b.String()
}
