// Command fake-runner-listener is a stand-in for actions/runner's
// Runner.Listener, for end-to-end tests of the attested-runner agent. Install
// it as <runner-dir>/bin/Runner.Listener and start it exactly as the agent
// starts the real one.
//
// # Contract
//
// Arguments: exactly "run" (`Runner.Listener run`); anything else prints the
// usage and exits 1.
//
// Environment:
//
//   - ACTIONS_RUNNER_INPUT_JITCONFIG: the encoded JIT config (the only way the
//     fake takes it: never argv). Like the real runner it trims the value and
//     removes every ACTIONS_RUNNER_INPUT_* variable (any case) from the
//     environment it passes on, so no hook or step sees the config. Without
//     it, the fake loads the config files a previous run left in the runner
//     directory, as the real runner does, or exits 1 "Runner is not
//     configured.".
//   - ACTIONS_RUNNER_HOOK_JOB_STARTED / ACTIONS_RUNNER_HOOK_JOB_COMPLETED:
//     paths of hook scripts (must end in .sh).
//   - GITHUB_ACTIONS_RUNNER_TRACE: when non-empty, verbose tracing, as in the
//     real runner (see "Logs" below).
//   - RUNNER_TOOL_CACHE: the tool cache (default <root>/_work/_tool).
//
// Exit status, as Runner.Listener's (Runner.Common/Constants.cs ReturnCode):
//
//	0  done: one job ran and was reported, or SIGTERM/SIGINT while idle
//	   (or mid-job: the job is cancelled and reported cancelled), or the
//	   registration was deleted while polling for a job (the local config
//	   files are deleted, as Runner.cs does)
//	1  terminated with error: bad arguments, a malformed JIT config, the
//	   runner registration deleted or already spent when the session is
//	   created (token exchange invalid_client, or 404), or a deprecated
//	   version without ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE
//	2  retryable: the server unreachable (or 5xx) for more than 30 s while
//	   creating the session (the real listener retries forever here; it
//	   exits 2 on unexpected exceptions)
//	4  run-once runner updating: the service sent an update message (its
//	   version is older than fakegithub's LatestRunnerVersion and .runner
//	   has no disableUpdate); the fake takes no job, prints the
//	   SelfUpdater's progress lines ("Downloading V runner") and exits
//	5  session conflict: another listener holds this runner's session (the
//	   real listener first retries for 4 minutes; the fake exits at once)
//	7  version deprecated (fakegithub's MinRunnerVersion), with
//	   ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1
//
// Every poll sends the runner's version and its .runner disableUpdate, as
// the real runner's GetAgentMessageAsync does.
//
// Runner root is the parent of the executable's directory (bin/). The fake
// creates _diag/ and the work folder (.runner workFolder, default _work)
// under it and, like the real runner, writes the decoded config files
// .runner, .credentials and .credentials_rsaparams into the root (the last
// one is the runner's private key: any process of the runner's user can
// read it, as with the real runner).
//
// # Behaviour reproduced
//
//   - Session: proves possession of the JIT key (an RS256 client assertion
//     for the config's authorizationUrl), opens one session, polls for a job
//     every 200 ms, renews the job's lease while it runs, reports the result,
//     deletes its session on a clean shutdown and exits after one job (JIT
//     runners are ephemeral). The protocol is the fake's (see package
//     e2e/fakegithub), not the real Actions service's.
//   - Terminal lines ("√ Connected to GitHub", "Current runner version:
//     '2.336.0'", "<time>: Listening for Jobs", "<time>: Running job: <job>",
//     "<time>: Job <job> completed with result: Succeeded").
//   - _diag/Runner_<yyyyMMdd-HHmmss>-utc.log and Worker_<...>-utc.log in the
//     trace format "[2024-05-01 12:00:00Z INFO Listener] message". Neither the
//     JIT config nor any credential is ever logged.
//   - Job directories: _work/<repo>/<repo> (GITHUB_WORKSPACE), _work/<repo>
//     (RUNNER_WORKSPACE), _work/_temp (RUNNER_TEMP, emptied at job start),
//     _work/_temp/_github_workflow/event.json (GITHUB_EVENT_PATH),
//     _work/_temp/_runner_file_commands/{set_env,add_path,set_output,
//     step_summary,save_state}_<uuid> (GITHUB_ENV, GITHUB_PATH,
//     GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, GITHUB_STATE, fresh per step and
//     processed after it), _work/_actions/<owner>/<repo>/<ref> plus its
//     .completed watermark for each action.
//   - Logs. The Worker log opens with the whole job message at INFO
//     (Runner.Worker/Worker.cs: "Job message:" and indented JSON on the
//     following lines: steps with their scripts, contextData.github with
//     the event payload, so a pull request's title and body, JSON-escaped;
//     see jobmessage.go). "Set up job" then writes the action-download
//     block of Runner.Worker/ActionManager.cs: "Prepare all required
//     actions", "Getting action download info" (when there are actions),
//     and per action "Download action repository 'OWNER/REPO@REF'
//     (SHA:<sha>)" or, for an immutable action package (Job.Actions[i].
//     Package), "##[group]Download immutable action package
//     'OWNER/REPO@REF'", "Version: <v>", "Digest: <manifest digest>",
//     "Source commit SHA: <sha>", "##[endgroup]"; then "Complete job name:
//     <job>" (JobExtension.cs). Like all step output these go to the
//     step's page under _diag/pages/, deleted once the step ends (the real
//     runner deletes pages after uploading them). The Worker log gets step
//     output, including those lines, only with GITHUB_ACTIONS_RUNNER_TRACE
//     set, as "[<time> VERB JobServerQueue] Enqueue web console line queue:
//     <line>"; in a default (Info) trace the real Worker log never has them.
//     Note that job output lands in that same stream: a step can print a
//     line that looks like a download.
//   - Environment of hooks and steps: the listener's own environment minus
//     ACTIONS_RUNNER_INPUT_*, then GITHUB_ENV values of earlier steps, then
//     GITHUB_ACTIONS=true, CI=true (unless CI is set), the GITHUB_* variables
//     of the real GitHub context allow-list (Runner.Worker/GitHubContext.cs:
//     GITHUB_REPOSITORY, _REPOSITORY_ID, _REPOSITORY_OWNER, _REF, _REF_NAME,
//     _REF_TYPE, _REF_PROTECTED, _SHA, _WORKFLOW, _WORKFLOW_REF,
//     _WORKFLOW_SHA, _EVENT_NAME, _EVENT_PATH, _ACTOR, _TRIGGERING_ACTOR,
//     _RUN_ID, _RUN_ATTEMPT, _RUN_NUMBER, _JOB, _ACTION, _SERVER_URL,
//     _API_URL, _GRAPHQL_URL, _WORKSPACE, _ENV, _PATH, _OUTPUT,
//     _STEP_SUMMARY, _STATE, _RETENTION_DAYS, _BASE_REF, _HEAD_REF) and
//     RUNNER_NAME, RUNNER_OS=Linux, RUNNER_ARCH (X64, ARM64), RUNNER_TEMP,
//     RUNNER_TOOL_CACHE, RUNNER_WORKSPACE, RUNNER_ENVIRONMENT=self-hosted,
//     RUNNER_TRACKING_ID. GITHUB_SERVER_URL is the scheme and host of
//     .runner gitHubUrl and GITHUB_API_URL that plus /api/v3, as the real
//     runner derives them for GitHub Enterprise Server.
//   - Hooks (Runner.Worker/JobHookProvider.cs): run with `bash -e <script>`
//     in GITHUB_WORKSPACE; a path not ending in .sh or missing fails the hook.
//     The started hook runs after the actions are downloaded and before any
//     step; if it fails the job fails, the steps are skipped and the
//     completed hook still runs (both are always() steps). The completed hook
//     is skipped when the listener is stopped mid-job.
//   - Steps: `run` as `shell: bash` (`bash --noprofile --norc -e -o pipefail
//     <script>`, the script in RUNNER_TEMP, working directory
//     GITHUB_WORKSPACE); `uses` of a local composite action ("./dir" under
//     the workspace, or an absolute directory: a fake-only convenience):
//     action.yml inputs with defaults, runs.steps[*] with shell: bash, id,
//     env, working-directory, outputs; expressions limited to
//     ${{ inputs.NAME }}, ${{ github.action_path }}, ${{ runner.temp }} and
//     ${{ steps.ID.outputs.NAME }} (anything else fails the step, naming the
//     expression). The first failing step fails the job and skips the rest.
//     After each step its process group is killed (the real runner kills
//     orphan processes at job end); on SIGTERM/SIGINT a step gets SIGINT,
//     then SIGTERM after 7.5 s, then SIGKILL after 2.5 s more.
//
// # Not reproduced
//
// The real Actions service protocol (broker, encrypted job messages, OAuth
// token endpoint, log upload), container jobs and services, Node.js and
// Docker actions, remote or nested `uses`, `if:` conditions, matrix,
// secrets and masking, job-level env/defaults, step summaries upload,
// the self-update download itself (nothing is fetched), the 4-minute
// session-conflict retry, endless reconnection while creating a session,
// the job message's service fields (resources, tokens, most variables),
// the web console queue's limit (the real JobServerQueue drops, untraced,
// lines while 1024 are queued), the runner's exact trace wording beyond
// the lines quoted above, and Windows/macOS.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/internal/fileio"
)

// runnerVersion is the actions/runner release the fake presents itself as.
const runnerVersion = "2.336.0"

// Exit codes of Runner.Listener (Runner.Common/Constants.cs ReturnCode).
const (
	exitSuccess               = 0
	exitTerminatedError       = 1
	exitRetryableError        = 2
	exitRunOnceRunnerUpdating = 4
	exitSessionConflict       = 5
	exitVersionDeprecated     = 7
)

const (
	envJITConfig    = "ACTIONS_RUNNER_INPUT_JITCONFIG"
	envInputPrefix  = "ACTIONS_RUNNER_INPUT_"
	envHookStarted  = "ACTIONS_RUNNER_HOOK_JOB_STARTED"
	envHookComplete = "ACTIONS_RUNNER_HOOK_JOB_COMPLETED"
	envTrace        = "GITHUB_ACTIONS_RUNNER_TRACE"
	// envDeprecatedExit: exit 7, not 1, when the service refuses this
	// runner version (Constants.Variables.Actions.ReturnVersionDeprecatedExitCode).
	envDeprecatedExit = "ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE"
)

// Timings. pollInterval stands in for the real long poll; connectGiveUp is
// how long session creation may fail before exit 2.
const (
	pollInterval    = 200 * time.Millisecond
	connectRetry    = time.Second
	connectGiveUp   = 30 * time.Second
	completeGiveUp  = 30 * time.Second
	shutdownTimeout = 5 * time.Second
)

const usage = `Usage: Runner.Listener run

The fake Runner.Listener takes its JIT config from the environment variable
ACTIONS_RUNNER_INPUT_JITCONFIG only.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "Runner.Listener:", err)
		os.Exit(exitTerminatedError)
	}
	os.Exit(run(ctx, os.Args, os.Environ(), exe, os.Stdout, os.Stderr))
}

// listener is one run of the fake Runner.Listener.
type listener struct {
	root    string
	env     []string // the environment handed to the worker: no ACTIONS_RUNNER_INPUT_*
	jit     string
	log     *diagLog
	term    *terminal
	now     func() time.Time
	hc      *http.Client
	hostEnv map[string]string
}

// run is the whole program; it returns the exit status.
func run(ctx context.Context, args, environ []string, exe string, stdout, stderr *os.File) int {
	if len(args) != 2 || args[1] != "run" {
		fmt.Fprint(stderr, usage)
		return exitTerminatedError
	}
	l := &listener{root: filepath.Dir(filepath.Dir(exe)), now: time.Now, hc: &http.Client{Timeout: 30 * time.Second}, hostEnv: map[string]string{}}
	// Store and remove every ACTIONS_RUNNER_INPUT_* variable (CommandSettings.cs).
	var removed []string
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(strings.ToUpper(k), envInputPrefix) {
			if strings.EqualFold(k, envJITConfig) {
				l.jit = strings.TrimSpace(v)
			}
			removed = append(removed, k)
			continue
		}
		l.env = append(l.env, kv)
		l.hostEnv[k] = v
	}
	var err error
	l.log, err = openDiag(filepath.Join(l.root, "_diag"), "Runner", l.now)
	if err != nil {
		fmt.Fprintln(stderr, "Runner.Listener: cannot create _diag:", err)
		return exitTerminatedError
	}
	defer l.log.Close()
	l.term = &terminal{out: stdout, errw: stderr, log: l.log}
	l.log.Info("Listener", "Runner is built for Linux (%s) - linux-%s.", runnerArch(), strings.ToLower(runnerArch()))
	l.log.Info("Listener", "Version: %s", runnerVersion)
	l.log.Info("Listener", "Arguments parsed")
	for _, k := range removed {
		l.log.Info("CommandSettings", "Removing env var: '%s'", k)
	}
	code := l.run(ctx)
	l.log.Info("Listener", "Runner execution has finished with return code %d", code)
	return code
}

func (l *listener) run(ctx context.Context) int {
	cfg, code := l.loadConfig()
	if cfg == nil {
		return code
	}
	l.log.Info("Runner", "Runner settings: agent %d '%s', pool %d '%s', server '%s'", cfg.Runner.AgentID, cfg.Runner.AgentName, cfg.Runner.PoolID, cfg.Runner.PoolName, cfg.Runner.ServerURL)
	workDir := cfg.Runner.WorkFolder
	if workDir == "" {
		workDir = "_work"
	}
	if !filepath.IsAbs(workDir) {
		workDir = filepath.Join(l.root, workDir)
	}
	l.log.Info("Runner", "Validating directory permissions for: '%s'", workDir)
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		l.term.Error(fmt.Sprintf("Fail to create and validate runner's work directory '%s'.", workDir))
		return exitTerminatedError
	}
	client, err := fakegithub.NewRunnerClient(cfg, l.hc)
	if err != nil {
		l.term.Error(err.Error())
		return exitTerminatedError
	}
	if code, ok := l.connect(ctx, client); !ok {
		return code
	}
	l.term.Line(fmt.Sprintf("Current runner version: '%s'", runnerVersion))
	l.term.Line(fmt.Sprintf("%s: Listening for Jobs", l.stamp()))

	failing := false // print connection errors once, as the runner does
	poll := fakegithub.PollParams{RunnerVersion: runnerVersion, DisableUpdate: cfg.Runner.DisableUpdate}
	for {
		job, err := client.Acquire(ctx, poll)
		if err == nil && failing {
			failing = false
			l.term.Line(fmt.Sprintf("%s: Runner reconnected.", l.stamp()))
		}
		switch {
		case ctx.Err() != nil:
			return l.shutdown(client)
		case errors.Is(err, fakegithub.ErrRegistrationGone):
			// Runner.Listener/Runner.cs: RunnerNotFoundException while
			// retrieving messages cleans up the local configuration and
			// exits 0.
			l.log.Info("Runner", "Runner registration no longer exists while retrieving messages. %v", err)
			l.term.Error("The runner no longer exists on the server. Cleaning up local configuration.")
			l.deleteLocalConfig()
			return exitSuccess
		case errors.Is(err, fakegithub.ErrVersionDeprecated):
			// Program.cs: AccessDeniedException with error code 1 exits 7
			// with ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE set,
			// else 1.
			l.term.Error(fmt.Sprintf("An error occurred: %v", err))
			if truthy(l.hostEnv[envDeprecatedExit]) {
				return exitVersionDeprecated
			}
			return exitTerminatedError
		case err == nil && job != nil && job.MessageType == fakegithub.MessageAgentRefresh:
			return l.selfUpdate(job.TargetVersion)
		case errors.Is(err, fakegithub.ErrSessionConflict):
			// Our session was taken or expired: create it again.
			l.log.Info("MessageListener", "Session expired, recreating: %v", err)
			if code, ok := l.connect(ctx, client); !ok {
				return code
			}
		case err != nil:
			l.log.Error("MessageListener", "Catch exception during get next message. %v", err)
			if !failing {
				failing = true
				l.term.Error(fmt.Sprintf("%s: Runner connect error: %v. Retrying until reconnected.", l.stamp(), err))
			}
		case job != nil:
			return l.runJob(ctx, client, cfg, workDir, job)
		}
		select {
		case <-ctx.Done():
			return l.shutdown(client)
		case <-time.After(pollInterval):
		}
	}
}

// loadConfig decodes the JIT config (or loads the files a previous run
// wrote) and saves the files into the runner root, as the real runner does.
func (l *listener) loadConfig() (*fakegithub.JITConfig, int) {
	var cfg *fakegithub.JITConfig
	var err error
	if l.jit != "" {
		cfg, err = fakegithub.DecodeJITConfig(l.jit)
		if err != nil {
			l.log.Error("Runner", "%v", err)
			l.term.Error(err.Error())
			return nil, exitTerminatedError
		}
		for _, name := range []string{fakegithub.FileRunner, fakegithub.FileCredentials, fakegithub.FileRSAParams} {
			p := filepath.Join(l.root, name)
			// 0666 before umask, as .NET's File.WriteAllBytes.
			if err := os.WriteFile(p, cfg.Files[name], 0o666); err != nil {
				l.term.Error(err.Error())
				return nil, exitTerminatedError
			}
			l.log.Info("Runner", "Saved %d bytes to '%s'.", len(cfg.Files[name]), p)
		}
		return cfg, 0
	}
	files := map[string][]byte{}
	for _, name := range []string{fakegithub.FileRunner, fakegithub.FileCredentials, fakegithub.FileRSAParams} {
		b, err := fileio.ReadFile(filepath.Join(l.root, name), fakegithub.MaxJITFileSize)
		if err != nil {
			l.log.Info("ConfigurationManager", "%s: %v", name, err)
			l.term.Error("Runner is not configured.")
			l.term.Line(strings.TrimSpace(usage))
			return nil, exitTerminatedError
		}
		files[name] = b
	}
	cfg, err = fakegithub.ParseJITConfigFiles(files)
	if err != nil {
		l.log.Error("Runner", "%v", err)
		l.term.Error(err.Error())
		return nil, exitTerminatedError
	}
	return cfg, 0
}

// connect opens the session, retrying transient failures for connectGiveUp.
func (l *listener) connect(ctx context.Context, client *fakegithub.RunnerClient) (int, bool) {
	var firstErr time.Time
	for {
		l.log.Info("MessageListener", "Attempt to create session.")
		// A signal does not abandon a session half made: the server may
		// have opened it, and only a deleted session leaves the runner
		// offline.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		err := client.Connect(cctx)
		cancel()
		var se *fakegithub.StatusError
		switch {
		case err == nil && ctx.Err() != nil:
			return l.shutdown(client), false
		case err == nil:
			l.log.Info("MessageListener", "Session created.")
			l.term.Line("")
			l.term.Line("√ Connected to GitHub")
			l.term.Line("")
			return 0, true
		case ctx.Err() != nil:
			return exitSuccess, false
		case errors.Is(err, fakegithub.ErrSessionConflict):
			l.log.Info("MessageListener", "The session for this runner already exists.")
			l.term.Error("A session for this runner already exists.")
			return exitSessionConflict, false
		case errors.Is(err, fakegithub.ErrRegistrationGone):
			l.log.Error("MessageListener", "Catch exception during create session. %v", err)
			l.term.Error("Failed to create a session. The runner registration has been deleted from the server, please re-configure. Runner registrations are automatically deleted for runners that have not connected to the service recently.")
			return exitTerminatedError, false
		case errors.As(err, &se) && !se.Retryable():
			l.log.Error("MessageListener", "Non-retriable exception: %v", err)
			l.term.Error(fmt.Sprintf("Failed to create session. %v", err))
			return exitTerminatedError, false
		}
		l.log.Error("MessageListener", "Catch exception during create session. %v", err)
		if firstErr.IsZero() {
			firstErr = l.now()
			l.term.Error(fmt.Sprintf("%s: Runner connect error: %v. Retrying until reconnected.", l.stamp(), err))
		}
		if l.now().Sub(firstErr) > connectGiveUp {
			l.term.Error(fmt.Sprintf("Runner could not connect for %v: giving up.", connectGiveUp))
			return exitRetryableError, false
		}
		l.log.Info("MessageListener", "Sleeping for %d seconds before retrying.", int(connectRetry/time.Second))
		select {
		case <-ctx.Done():
			return exitSuccess, false
		case <-time.After(connectRetry):
		}
	}
}

// selfUpdate is what a runner does with an update message
// (Runner.Listener/Runner.cs, SelfUpdater.cs): it takes no job, prints its
// progress, "downloads" the target version (nothing is fetched here) and
// exits 4, the run-once runner's RunOnceRunnerUpdating, for its update
// script to restart it: a JIT runner is ephemeral, hence run-once.
func (l *listener) selfUpdate(target string) int {
	l.log.Info("Runner", "Refresh message received, kick-off selfupdate background process.")
	for _, line := range []string{
		"Runner update in progress, do not shutdown runner.",
		fmt.Sprintf("Downloading %s runner", target),
		"Waiting for current job finish running.",
		"Generate and execute update script.",
		"Runner will exit shortly for update, should be back online within 10 seconds.",
		"Runner update process finished.",
	} {
		l.term.Line(line)
	}
	l.log.Info("Runner", "Auto update task finished at backend, an runner update is ready to apply exit the current runner instance.")
	return exitRunOnceRunnerUpdating
}

// deleteLocalConfig removes the config files (ConfigurationManager.DeleteLocalRunnerConfig).
func (l *listener) deleteLocalConfig() {
	for _, name := range []string{fakegithub.FileRunner, fakegithub.FileCredentials, fakegithub.FileRSAParams} {
		os.Remove(filepath.Join(l.root, name))
	}
}

// truthy is StringUtil.ConvertToBoolean: "1", "true" (any case) are true.
func truthy(v string) bool { return v == "1" || strings.EqualFold(v, "true") }

// shutdown deletes the session on SIGTERM/SIGINT and exits 0.
func (l *listener) shutdown(client *fakegithub.RunnerClient) int {
	l.log.Info("Runner", "Runner shutdown requested: deleting the session.")
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := client.Disconnect(ctx); err != nil {
		l.log.Warning("MessageListener", "Delete session failed: %v", err)
	}
	l.term.Line("Exiting...")
	return exitSuccess
}

func (l *listener) runJob(ctx context.Context, client *fakegithub.RunnerClient, cfg *fakegithub.JITConfig, workDir string, aj *fakegithub.AcquiredJob) int {
	l.log.Info("JobDispatcher", "Job request %d for plan %d job '%s' received.", aj.RequestID, aj.Job.RunID, aj.Job.Job)
	l.term.Line(fmt.Sprintf("%s: Running job: %s", l.stamp(), aj.Job.Job))

	jobCtx, cancelJob := context.WithCancel(ctx)
	defer cancelJob()
	lost := make(chan struct{})
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		every := time.Duration(aj.LeaseSeconds) * time.Second / 3
		if every < time.Second {
			every = time.Second
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-jobCtx.Done():
				return
			case <-t.C:
				err := client.Renew(jobCtx, aj.RequestID)
				if errors.Is(err, fakegithub.ErrJobLost) || errors.Is(err, fakegithub.ErrSessionConflict) {
					l.log.Error("JobDispatcher", "Job request %d is no longer ours: %v", aj.RequestID, err)
					close(lost)
					cancelJob()
					return
				}
				if err != nil && jobCtx.Err() == nil {
					l.log.Warning("JobDispatcher", "Renew job request %d failed: %v", aj.RequestID, err)
				}
			}
		}
	}()

	w, err := newWorker(cfg, l.root, workDir, l.env, l.hostEnv, aj, l.now)
	result := fakegithub.ResultFailed
	if err != nil {
		l.log.Error("JobDispatcher", "Worker failed to start: %v", err)
	} else {
		result = w.run(jobCtx)
		w.close()
	}
	cancelJob()
	<-renewDone

	select {
	case <-lost:
		l.term.Error(fmt.Sprintf("%s: Job %s was lost by the server.", l.stamp(), aj.Job.Job))
		return exitSuccess
	default:
	}
	// Report the result, retrying transient errors.
	deadline := l.now().Add(completeGiveUp)
	for {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := client.Complete(cctx, aj.RequestID, result)
		cancel()
		var se *fakegithub.StatusError
		if err == nil || !(errors.As(err, &se) && se.Retryable() || isNetErr(err)) || l.now().After(deadline) {
			if err != nil {
				l.log.Error("JobDispatcher", "Cannot report the job result: %v", err)
			}
			break
		}
		time.Sleep(connectRetry)
	}
	l.term.Line(fmt.Sprintf("%s: Job %s completed with result: %s", l.stamp(), aj.Job.Job, displayResult(result)))
	l.log.Info("Runner", "Job has finished at backend, the runner will exit since it is running under onetime use mode.")
	return exitSuccess
}

func isNetErr(err error) bool {
	var se *fakegithub.StatusError
	return err != nil && !errors.As(err, &se) && !errors.Is(err, fakegithub.ErrJobLost) &&
		!errors.Is(err, fakegithub.ErrRegistrationGone) && !errors.Is(err, fakegithub.ErrSessionConflict)
}

func displayResult(r string) string {
	switch r {
	case fakegithub.ResultSucceeded:
		return "Succeeded"
	case fakegithub.ResultCancelled:
		return "Canceled"
	default:
		return "Failed"
	}
}

// stamp is the terminal's time format (.NET "u").
func (l *listener) stamp() string { return l.now().UTC().Format("2006-01-02 15:04:05Z") }

func runnerArch() string {
	if runtime.GOARCH == "arm64" {
		return "ARM64"
	}
	return "X64"
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
