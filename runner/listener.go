package runner

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync/atomic"
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
	// listenerEnvDeprecatedExit makes a runner that GitHub refuses as too
	// old exit 7 instead of 1 (Runner.Listener/Program.cs
	// GetRunnerVersionDeprecatedExitCode), so the agent can tell it apart.
	listenerEnvDeprecatedExit = "ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE"
)

// Runner outcomes the agent reports to the gate (DeregisterRequest.Outcome).
const (
	OutcomeDone = "done"
	// OutcomeFailed: the runner ended with an error (see the reason).
	OutcomeFailed = "failed"
	// OutcomeImageOutOfDate: the runner wanted to update itself (exit 3/4)
	// or GitHub refused its version (exit 7): the image must be rebuilt
	// with a current runner, or every VM of it will end the same way.
	OutcomeImageOutOfDate = "image_out_of_date"
	// OutcomeIdle: no job started within the agent's idle TTL (the job
	// that caused the VM went to another runner, or never existed).
	OutcomeIdle = "idle"
)

// listenerExitMeaning explains Runner.Listener's exit codes
// (Runner.Common/Constants.cs ReturnCode).
var listenerExitMeaning = map[int]string{
	0: "done: the job finished or the runner shut down",
	1: "terminated with an error: configuration invalid or already used, or registration removed",
	2: "retryable failure (not retried: a JIT configuration is single use)",
	3: "the runner downloaded an update and exited to apply it",
	4: "the runner downloaded an update and exited to apply it (run-once runner)",
	5: "session conflict: another listener holds this runner's session",
	6: "the service refreshed the runner's configuration (not restarted: single use)",
	7: "GitHub refused this runner version as deprecated",
}

type listenerExit struct {
	code   int
	signal string
	err    error
	// version is the runner's own ("Current runner version: 'V'") and
	// updateTo the version it downloaded ("Downloading V runner",
	// Runner.Listener/SelfUpdater.cs), from its terminal output before any
	// job started (the job runs as the runner's user and could write to it).
	version, updateTo string
	// afterJob: the runner exited after a job had started.
	afterJob bool
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

// outcome classifies the exit for the gate, with a reason for an admin.
func (e listenerExit) outcome() (string, string) {
	if e.signal != "" || e.err != nil {
		return OutcomeFailed, "runner " + e.String()
	}
	have := e.version
	if have == "" {
		have = "unknown"
	}
	switch {
	case e.code == 0:
		return OutcomeDone, "runner " + e.String()
	case e.afterJob:
		// An updating runner takes no job; once a job ran, its code could
		// have made the runner exit with any status.
		return OutcomeFailed, "runner " + e.String() + " after the job started"
	}
	switch e.code {
	case 3, 4:
		want := e.updateTo
		if want == "" {
			want = "the latest release"
		}
		return OutcomeImageOutOfDate, fmt.Sprintf("image out of date: rebuild with runner >= %s (the image has %s; the runner asked to self-update, exit %d)", want, have, e.code)
	case 7:
		return OutcomeImageOutOfDate, fmt.Sprintf("image out of date: rebuild with a current runner release (GitHub refused runner %s as deprecated, exit 7)", have)
	}
	return OutcomeFailed, "runner " + e.String()
}

var (
	runnerVersionLine = regexp.MustCompile(`^Current runner version: '([0-9A-Za-z.+-]{1,64})'$`)
	runnerUpdateLine  = regexp.MustCompile(`^Downloading ([0-9A-Za-z.+-]{1,64}) runner$`)
)

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
//
// jobStarted is set by the agent when the job-started hook ran: from then on
// the runner's output is no longer trusted (the job runs as its user).
func startListener(runnerDir string, jit []byte, hooks hookPaths, uid, gid int, jobStarted *atomic.Bool, log *slog.Logger) (*listenerProc, error) {
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
		listenerEnvDeprecatedExit + "=1",
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
		var version, updateTo string
		sc := bufio.NewScanner(io.LimitReader(out, 256<<20))
		for sc.Scan() {
			line := sc.Text()
			log.Info("runner", "line", line)
			if jobStarted.Load() {
				continue
			}
			if m := runnerVersionLine.FindStringSubmatch(line); m != nil && version == "" {
				version = m[1]
			}
			if m := runnerUpdateLine.FindStringSubmatch(line); m != nil {
				updateTo = m[1]
			}
		}
		io.Copy(io.Discard, out)
		err := cmd.Wait()
		e := listenerExit{version: version, updateTo: updateTo, afterJob: jobStarted.Load()}
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
