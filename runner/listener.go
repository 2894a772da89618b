package runner

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// The GitHub runner's Runner.Listener contract (actions/runner):
//
//   - started as `bin/Runner.Listener run` from the runner directory, with
//     the JIT configuration in ACTIONS_RUNNER_INPUT_JITCONFIG (never in argv,
//     never on disk);
//   - ACTIONS_RUNNER_HOOK_JOB_STARTED / _COMPLETED name scripts it runs with
//     `bash -e` as its own user, with the job's GITHUB_* variables;
//   - it writes _diag/Runner_*.log and, per job, _diag/Worker_*.log;
//   - exit codes below.
const (
	listenerEnvJIT          = "ACTIONS_RUNNER_INPUT_JITCONFIG"
	listenerEnvHookStarted  = "ACTIONS_RUNNER_HOOK_JOB_STARTED"
	listenerEnvHookComplete = "ACTIONS_RUNNER_HOOK_JOB_COMPLETED"
)

// listenerExitMeaning explains Runner.Listener's exit codes.
var listenerExitMeaning = map[int]string{
	0: "done: the job finished or the runner shut down",
	1: "terminated with an error: configuration invalid or already used, or registration removed",
	2: "retryable failure (not retried: a JIT configuration is single use)",
	3: "update requested (attested images disable self-update; treated as a failure)",
	4: "update requested (attested images disable self-update; treated as a failure)",
	5: "session conflict: another listener holds this runner's session",
}

type listenerExit struct {
	code   int
	signal string
	err    error
}

func (e listenerExit) String() string {
	switch {
	case e.signal != "":
		return "killed by " + e.signal
	case e.err != nil:
		return e.err.Error()
	}
	if m, ok := listenerExitMeaning[e.code]; ok {
		return fmt.Sprintf("exit %d (%s)", e.code, m)
	}
	return fmt.Sprintf("exit %d (unexpected)", e.code)
}

// hookPaths are the generated hook scripts, and what the job needs to
// find the agent (exported to the runner's environment, which the runner
// passes on to jobs).
type hookPaths struct{ started, completed, socket, agent string }

type listenerProc struct {
	cmd    *exec.Cmd
	exited chan listenerExit
	done   chan struct{}
}

// startListener execs the runner as the unprivileged user with the JIT
// configuration in its environment and nothing else secret. Its output goes
// to the agent's log, line by line.
func startListener(runnerDir string, jit []byte, hooks hookPaths, uid, gid int, log *slog.Logger) (*listenerProc, error) {
	bin := filepath.Join(runnerDir, "bin", "Runner.Listener")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("runner binary: %w", err)
	}
	cmd := exec.Command(bin, "run")
	cmd.Dir = runnerDir
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + runnerDir,
		"LANG=C.UTF-8",
		listenerEnvJIT + "=" + string(jit),
		listenerEnvHookStarted + "=" + hooks.started,
		listenerEnvHookComplete + "=" + hooks.completed,
		// The runner logs each action download (with the commit it
		// resolved) to _diag/Worker_*.log only with tracing on.
		"GITHUB_ACTIONS_RUNNER_TRACE=1",
		"ATTESTED_RUNNER_SOCKET=" + hooks.socket,
		"ATTESTED_RUNNER_AGENT=" + hooks.agent,
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if uid != os.Getuid() || gid != os.Getgid() {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the runner: %w", err)
	}
	p := &listenerProc{cmd: cmd, exited: make(chan listenerExit, 1), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(io.LimitReader(out, 256<<20))
		for sc.Scan() {
			log.Info("runner", "line", sc.Text())
		}
		io.Copy(io.Discard, out)
		err := cmd.Wait()
		e := listenerExit{}
		if err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					e.signal = ws.Signal().String()
				} else {
					e.code = ee.ExitCode()
				}
			} else {
				e.err = err
			}
		}
		log.Info("runner exited", "status", e.String())
		p.exited <- e
		close(p.done)
	}()
	return p, nil
}

// stop ends the runner: SIGTERM to its process group, SIGKILL after grace.
func (p *listenerProc) stop(grace time.Duration) {
	if p == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}
