package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/internal/fileio"
)

// maxFileCommand bounds a GITHUB_ENV / GITHUB_PATH / GITHUB_OUTPUT file the
// worker reads back after a step.
const maxFileCommand = 1 << 20

// Cancellation timings of the real runner (ProcessInvoker: SIGINT, 7.5 s,
// SIGTERM, 2.5 s, SIGKILL).
const (
	sigintGrace  = 7500 * time.Millisecond
	sigtermGrace = 2500 * time.Millisecond
)

// worker runs one job, as Runner.Worker does.
type worker struct {
	cfg        *fakegithub.JITConfig
	job        fakegithub.Job
	requestID  int64
	now        func() time.Time
	log        *diagLog
	trace      bool
	baseEnv    []string
	hostEnv    map[string]string
	timelineID string
	trackingID string

	workDir, pipelineDir, workspace, tempDir, toolDir, actionsDir, pagesDir string
	fileCmdDir, eventPath                                                   string

	jobEnv      map[string]string // from GITHUB_ENV
	prependPath []string          // from GITHUB_PATH, newest first
	runSteps    int
	usesSteps   int
}

func newWorker(cfg *fakegithub.JITConfig, root, workDir string, env []string, hostEnv map[string]string, aj *fakegithub.AcquiredJob, now func() time.Time) (*worker, error) {
	job := aj.Job
	w := &worker{
		cfg: cfg, job: job, requestID: aj.RequestID, now: now, baseEnv: env, hostEnv: hostEnv,
		trace:      hostEnv[envTrace] != "",
		timelineID: newUUID(), trackingID: "github_" + newUUID(),
		jobEnv: map[string]string{},
	}
	diagDir := filepath.Join(root, "_diag")
	var err error
	w.log, err = openDiag(diagDir, "Worker", now)
	if err != nil {
		return nil, err
	}
	repoName := job.Repository[strings.LastIndex(job.Repository, "/")+1:]
	w.workDir = workDir
	w.pipelineDir = filepath.Join(workDir, repoName)
	w.workspace = filepath.Join(w.pipelineDir, repoName)
	w.tempDir = filepath.Join(workDir, "_temp")
	w.toolDir = hostEnv["RUNNER_TOOL_CACHE"]
	if w.toolDir == "" {
		w.toolDir = filepath.Join(workDir, "_tool")
	}
	w.actionsDir = filepath.Join(workDir, "_actions")
	w.pagesDir = filepath.Join(diagDir, "pages")
	w.fileCmdDir = filepath.Join(w.tempDir, "_runner_file_commands")
	w.eventPath = filepath.Join(w.tempDir, "_github_workflow", "event.json")
	if err := os.MkdirAll(w.pagesDir, 0o755); err != nil {
		w.log.Close()
		return nil, err
	}
	return w, nil
}

func (w *worker) close() { w.log.Close() }

// run executes the job and returns its result.
func (w *worker) run(ctx context.Context) string {
	w.log.Info("Worker", "Version: %s", runnerVersion)
	w.log.Info("Worker", "Waiting to receive the job message from the channel.")
	w.log.Info("Worker", "Message received.")
	// Worker.cs: the whole job message, attacker text included, before
	// the job (and so its started hook) runs.
	w.log.Info("Worker", "%s", w.jobMessageTrace(w.requestID))
	w.log.Info("Worker", "Listening for cancel message from the channel.")
	w.log.Info("JobRunner", "Job ID %s", w.timelineID)

	failed := false
	if err := w.setUpJob(); err != nil {
		w.log.Error("JobRunner", "Set up job failed: %v", err)
		return fakegithub.ResultFailed
	}
	if p := w.hostEnv[envHookStarted]; p != "" {
		if !w.runHook(ctx, "Set up runner", "job started hook", p) {
			failed = true
		}
	}
	for i, st := range w.job.Steps {
		if ctx.Err() != nil {
			break
		}
		name := st.Name
		if name == "" {
			if st.Run != "" {
				name = "Run " + firstLine(st.Run)
			} else {
				name = "Run " + st.Uses
			}
		}
		if failed {
			w.log.Info("StepsRunner", "Skipping step due to condition evaluation: '%s'", name)
			continue
		}
		var ok bool
		if st.Run != "" {
			ok = w.runStep(ctx, name, st.Run)
		} else {
			ok = w.usesStep(ctx, name, st)
		}
		if !ok {
			w.log.Info("StepsRunner", "Step %d '%s' failed: the job fails.", i, name)
			failed = true
		}
	}
	if ctx.Err() != nil {
		// Shut down mid-job: the runner does not run the completed hook.
		w.log.Info("JobRunner", "Job was cancelled; skipping post-job steps.")
		w.finish()
		return fakegithub.ResultCancelled
	}
	if p := w.hostEnv[envHookComplete]; p != "" {
		if !w.runHook(ctx, "Complete runner", "job completed hook", p) {
			failed = true
		}
	}
	w.finish()
	if ctx.Err() != nil {
		return fakegithub.ResultCancelled
	}
	if failed {
		return fakegithub.ResultFailed
	}
	return fakegithub.ResultSucceeded
}

// setUpJob is the "Set up job" step: directories, the temp folder emptied,
// and the actions "downloaded".
func (w *worker) setUpJob() error {
	sl := w.newStepLog("Set up job")
	defer sl.End()
	host, _ := os.Hostname()
	sl.Output(fmt.Sprintf("Current runner version: '%s'", runnerVersion))
	sl.Output(fmt.Sprintf("Runner name: '%s'", w.cfg.Runner.AgentName))
	if w.cfg.Runner.PoolName != "" {
		sl.Output(fmt.Sprintf("Runner group name: '%s'", w.cfg.Runner.PoolName))
	}
	sl.Output(fmt.Sprintf("Machine name: '%s'", host))
	sl.Output("Prepare workflow directory")
	for _, d := range []string{w.workspace, w.toolDir, w.actionsDir, w.pagesDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	w.log.Info("TempDirectoryManager", "Cleaning runner temp folder: %s", w.tempDir)
	if entries, err := os.ReadDir(w.tempDir); err == nil {
		for _, e := range entries {
			os.RemoveAll(filepath.Join(w.tempDir, e.Name()))
		}
	}
	for _, d := range []string{w.tempDir, w.fileCmdDir, filepath.Dir(w.eventPath)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// JobExtension.InitializeJob traces "Downloading actions" and calls
	// ActionManager.PrepareActionsAsync, which deletes the actions
	// directory at the start of a job and writes the action-download
	// block: its console lines, in order, are these.
	w.log.Info("JobExtension", "Downloading actions")
	sl.Output("Prepare all required actions")
	if err := os.RemoveAll(w.actionsDir); err != nil {
		return err
	}
	if len(w.job.Actions) > 0 {
		// GetDownloadInfoAsync, called only when there is an action to resolve.
		sl.Output("Getting action download info")
	}
	for _, a := range w.job.Actions {
		w.log.Verbose("ActionManager", "Entering DownloadRepositoryActionAsync")
		if p := a.Package; p != nil {
			// DownloadRepositoryActionAsync, ActionDownloadInfo.PackageDetails set.
			sl.Output(fmt.Sprintf("##[group]Download immutable action package '%s@%s'", a.Repository, a.Ref))
			sl.Output("Version: " + p.Version)
			sl.Output("Digest: " + p.ManifestDigest)
			sl.Output("Source commit SHA: " + a.SHA)
			sl.Output("##[endgroup]")
		} else {
			sl.Output(fmt.Sprintf("Download action repository '%s@%s' (SHA:%s)", a.Repository, a.Ref, a.SHA))
		}
		dest := filepath.Join(append([]string{w.actionsDir}, append(strings.Split(a.Repository, "/"), a.Ref)...)...)
		if !strings.HasPrefix(dest, w.actionsDir+string(filepath.Separator)) {
			return fmt.Errorf("action %q escapes the actions directory", a.Repository)
		}
		w.log.Info("ActionManager", "Save archive '%s/api/v3/repos/%s/tarball/%s' into %s.", serverURL(w.cfg.Runner.GitHubURL), a.Repository, a.SHA,
			filepath.Join(w.actionsDir, "_temp_"+newUUID(), newUUID()+".tar.gz"))
		if err := os.MkdirAll(dest, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dest+".completed", []byte(w.now().UTC().Format(time.RFC3339)), 0o644); err != nil {
			return err
		}
		w.log.Info("ActionManager", "Finished getting action repository.")
	}
	// Back in InitializeJob: "Complete job name: <JobDisplayName>" ends
	// "Set up job"; the started hook's step comes next.
	sl.Output(fmt.Sprintf("Complete job name: %s", w.job.Job))
	return nil
}

func (w *worker) finish() {
	sl := w.newStepLog("Complete job")
	sl.Output("Cleaning up orphan processes")
	sl.End()
	// TempDirectoryManager.CleanupTempDirectory: RUNNER_TEMP is emptied
	// when the job ends.
	w.log.Info("TempDirectoryManager", "Cleaning runner temp folder: %s", w.tempDir)
	if entries, err := os.ReadDir(w.tempDir); err == nil {
		for _, e := range entries {
			os.RemoveAll(filepath.Join(w.tempDir, e.Name()))
		}
	}
	w.log.Info("JobRunner", "Job result after all job steps finish: done")
}

// runHook runs a job hook with `bash -e <path>` (JobHookProvider.cs: the
// shell for a .sh file is bash with sh's arguments, "-e {0}").
func (w *worker) runHook(ctx context.Context, display, kind, path string) bool {
	sl := w.newStepLog(display)
	defer sl.End()
	sl.Output(fmt.Sprintf("A %s has been configured by the self-hosted runner administrator", kind))
	if filepath.Ext(path) != ".sh" {
		sl.Output(fmt.Sprintf("##[error]%s is not a valid path to a script. Make sure it ends in '.sh', '.ps1' or '.js'.", path))
		return false
	}
	if st, err := os.Stat(path); err != nil || st.IsDir() {
		sl.Output("##[error]File doesn't exist")
		return false
	}
	env, files, err := w.stepEnv("", nil)
	if err != nil {
		sl.Output("##[error]" + err.Error())
		return false
	}
	code := w.execute(ctx, sl, w.workspace, env, "bash", "-e", path)
	w.processFileCommands(sl, files, nil)
	if code != 0 {
		sl.Output(fmt.Sprintf("##[error]Process completed with exit code %d.", code))
		return false
	}
	return true
}

// runStep runs a `run:` step as `shell: bash`.
func (w *worker) runStep(ctx context.Context, name, script string) bool {
	sl := w.newStepLog(name)
	defer sl.End()
	w.runSteps++
	action := "__run"
	if w.runSteps > 1 {
		action = fmt.Sprintf("__run_%d", w.runSteps)
	}
	env, files, err := w.stepEnv(action, nil)
	if err != nil {
		sl.Output("##[error]" + err.Error())
		return false
	}
	return w.runBash(ctx, sl, w.workspace, env, files, script, nil)
}

// runBash writes script to RUNNER_TEMP and runs it as `shell: bash` does.
func (w *worker) runBash(ctx context.Context, sl *stepLog, dir string, env []string, files fileCommands, script string, outputs map[string]string) bool {
	sl.Output("##[group]Run " + firstLine(script))
	path := filepath.Join(w.tempDir, newUUID()+".sh")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		sl.Output("##[error]" + err.Error())
		return false
	}
	sl.Output("##[endgroup]")
	code := w.execute(ctx, sl, dir, env, "bash", "--noprofile", "--norc", "-e", "-o", "pipefail", path)
	w.processFileCommands(sl, files, outputs)
	if code != 0 {
		sl.Output(fmt.Sprintf("##[error]Process completed with exit code %d.", code))
		return false
	}
	return true
}

// execute runs a process in its own process group and returns its exit
// code (-1 when it could not start or was killed).
func (w *worker) execute(ctx context.Context, sl *stepLog, dir string, env []string, name string, args ...string) int {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = env
	lw := &lineWriter{log: sl}
	cmd.Stdout, cmd.Stderr = lw, lw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	w.log.Info("ProcessInvoker", "Starting process: File name: '%s' Arguments: '%s' Working directory: '%s'", name, strings.Join(args, " "), dir)
	if err := cmd.Start(); err != nil {
		sl.Output("##[error]" + err.Error())
		return -1
	}
	pgid := cmd.Process.Pid
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		w.log.Info("ProcessInvoker", "Cancel process %d: SIGINT", pgid)
		syscall.Kill(-pgid, syscall.SIGINT)
		select {
		case <-done:
			return
		case <-time.After(sigintGrace):
		}
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-done:
			return
		case <-time.After(sigtermGrace):
		}
		syscall.Kill(-pgid, syscall.SIGKILL)
	}()
	err := cmd.Wait()
	close(done)
	lw.Flush()
	// Orphans of the step die with it.
	syscall.Kill(-pgid, syscall.SIGKILL)
	code := cmd.ProcessState.ExitCode()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		sl.Output("##[error]" + err.Error())
	}
	w.log.Info("ProcessInvoker", "Finished process %d with exit code %d", pgid, code)
	return code
}

// fileCommands are a step's GITHUB_ENV, GITHUB_PATH, GITHUB_OUTPUT,
// GITHUB_STEP_SUMMARY and GITHUB_STATE files.
type fileCommands struct{ env, path, output, summary, state string }

// stepEnv builds a step's environment and creates its file-command files.
// extra (composite step env:, GITHUB_ACTION_PATH) sits below the GitHub and
// runner context variables, as in ScriptHandler.cs.
func (w *worker) stepEnv(action string, extra map[string]string) ([]string, fileCommands, error) {
	suffix := newUUID()
	files := fileCommands{
		env:     filepath.Join(w.fileCmdDir, "set_env_"+suffix),
		path:    filepath.Join(w.fileCmdDir, "add_path_"+suffix),
		output:  filepath.Join(w.fileCmdDir, "set_output_"+suffix),
		summary: filepath.Join(w.fileCmdDir, "step_summary_"+suffix),
		state:   filepath.Join(w.fileCmdDir, "save_state_"+suffix),
	}
	for _, p := range []string{files.env, files.path, files.output, files.summary, files.state} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			return nil, files, err
		}
	}
	payload := w.job.EventPayload
	if len(payload) == 0 {
		payload = json.RawMessage("{}")
	}
	if err := os.WriteFile(w.eventPath, payload, 0o644); err != nil {
		return nil, files, err
	}

	env := map[string]string{}
	for _, kv := range w.baseEnv {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	for k, v := range w.jobEnv {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	if len(w.prependPath) > 0 {
		env["PATH"] = strings.Join(w.prependPath, string(os.PathListSeparator)) + string(os.PathListSeparator) + env["PATH"]
	}
	for k, v := range w.contextEnv(action, files) {
		env[k] = v
	}
	env["GITHUB_ACTIONS"] = "true"
	if _, ok := w.hostEnv["CI"]; !ok {
		if _, set := env["CI"]; !set {
			env["CI"] = "true"
		}
	}
	env["RUNNER_TRACKING_ID"] = w.trackingID
	out := make([]string, 0, len(env))
	for k, v := range env {
		// Never hand the JIT config to a job, whatever its spelling.
		if strings.HasPrefix(strings.ToUpper(k), envInputPrefix) {
			continue
		}
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out, files, nil
}

// contextEnv is the runtime environment of the github and runner contexts.
func (w *worker) contextEnv(action string, files fileCommands) map[string]string {
	j := w.job
	owner, _, _ := strings.Cut(j.Repository, "/")
	refName, refType := j.Ref, "branch"
	switch {
	case strings.HasPrefix(j.Ref, "refs/heads/"):
		refName = strings.TrimPrefix(j.Ref, "refs/heads/")
	case strings.HasPrefix(j.Ref, "refs/tags/"):
		refName, refType = strings.TrimPrefix(j.Ref, "refs/tags/"), "tag"
	case strings.HasPrefix(j.Ref, "refs/pull/"):
		refName = strings.TrimPrefix(j.Ref, "refs/pull/")
	}
	workflow := j.Workflow
	if workflow == "" {
		// An unnamed workflow is named by its path.
		p := strings.TrimPrefix(j.WorkflowRef, j.Repository+"/")
		if i := strings.LastIndex(p, "@"); i >= 0 {
			p = p[:i]
		}
		workflow = p
	}
	workflowSHA := j.WorkflowSHA
	if workflowSHA == "" {
		workflowSHA = j.SHA
	}
	server := serverURL(w.cfg.Runner.GitHubURL)
	baseRef, headRef := prRefs(j)
	return map[string]string{
		"GITHUB_REPOSITORY":       j.Repository,
		"GITHUB_REPOSITORY_ID":    strconv.FormatInt(j.RepositoryID, 10),
		"GITHUB_REPOSITORY_OWNER": owner,
		"GITHUB_REF":              j.Ref,
		"GITHUB_REF_NAME":         refName,
		"GITHUB_REF_TYPE":         refType,
		"GITHUB_REF_PROTECTED":    "false",
		"GITHUB_SHA":              j.SHA,
		"GITHUB_WORKFLOW":         workflow,
		"GITHUB_WORKFLOW_REF":     j.WorkflowRef,
		"GITHUB_WORKFLOW_SHA":     workflowSHA,
		"GITHUB_EVENT_NAME":       j.EventName,
		"GITHUB_EVENT_PATH":       w.eventPath,
		"GITHUB_ACTOR":            j.Actor,
		"GITHUB_TRIGGERING_ACTOR": j.Actor,
		"GITHUB_RUN_ID":           strconv.FormatInt(j.RunID, 10),
		"GITHUB_RUN_ATTEMPT":      strconv.Itoa(j.RunAttempt),
		"GITHUB_RUN_NUMBER":       strconv.Itoa(j.RunNumber),
		"GITHUB_JOB":              j.Job,
		"GITHUB_ACTION":           action,
		"GITHUB_SERVER_URL":       server,
		"GITHUB_API_URL":          server + "/api/v3",
		"GITHUB_GRAPHQL_URL":      server + "/api/graphql",
		"GITHUB_WORKSPACE":        w.workspace,
		"GITHUB_ENV":              files.env,
		"GITHUB_PATH":             files.path,
		"GITHUB_OUTPUT":           files.output,
		"GITHUB_STEP_SUMMARY":     files.summary,
		"GITHUB_STATE":            files.state,
		"GITHUB_RETENTION_DAYS":   "90",
		"GITHUB_BASE_REF":         baseRef,
		"GITHUB_HEAD_REF":         headRef,
		"RUNNER_NAME":             w.cfg.Runner.AgentName,
		"RUNNER_OS":               "Linux",
		"RUNNER_ARCH":             runnerArch(),
		"RUNNER_TEMP":             w.tempDir,
		"RUNNER_TOOL_CACHE":       w.toolDir,
		"RUNNER_WORKSPACE":        w.pipelineDir,
		"RUNNER_ENVIRONMENT":      "self-hosted",
	}
}

// serverURL is scheme://host[:port] of the runner's gitHubUrl
// (JobExtension.cs, for GitHub Enterprise Server).
func serverURL(gitHubURL string) string {
	u, err := url.Parse(gitHubURL)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// prRefs are the base and head refs of a pull_request event ("" otherwise).
func prRefs(j fakegithub.Job) (string, string) {
	if !strings.HasPrefix(j.EventName, "pull_request") {
		return "", ""
	}
	var ev struct {
		PullRequest struct {
			Base struct {
				Ref string `json:"ref"`
			} `json:"base"`
			Head struct {
				Ref string `json:"ref"`
			} `json:"head"`
		} `json:"pull_request"`
	}
	if json.Unmarshal(j.EventPayload, &ev) != nil {
		return "", ""
	}
	return ev.PullRequest.Base.Ref, ev.PullRequest.Head.Ref
}

// processFileCommands applies a step's GITHUB_ENV and GITHUB_PATH to later
// steps and collects GITHUB_OUTPUT into outputs (when not nil).
func (w *worker) processFileCommands(sl *stepLog, files fileCommands, outputs map[string]string) {
	if kv, err := readKeyValueFile(files.env); err != nil {
		sl.Output("##[error]GITHUB_ENV: " + err.Error())
	} else {
		for k, v := range kv {
			w.jobEnv[k] = v
		}
	}
	if b, err := fileio.ReadFile(files.path, maxFileCommand); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if p := strings.TrimSpace(sc.Text()); p != "" {
				w.prependPath = append([]string{p}, w.prependPath...)
			}
		}
	}
	if outputs != nil {
		if kv, err := readKeyValueFile(files.output); err != nil {
			sl.Output("##[error]GITHUB_OUTPUT: " + err.Error())
		} else {
			for k, v := range kv {
				outputs[k] = v
			}
		}
	}
}

// readKeyValueFile parses the file-command format: NAME=value lines and
// NAME<<DELIMITER heredocs.
func readKeyValueFile(path string) (map[string]string, error) {
	b, err := fileio.ReadFile(path, maxFileCommand)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	return parseKeyValue(b)
}

// parseKeyValue parses file-command content (at most maxFileCommand bytes).
func parseKeyValue(b []byte) (map[string]string, error) {
	if len(b) > maxFileCommand {
		return nil, fmt.Errorf("file command larger than %d bytes", maxFileCommand)
	}
	out := map[string]string{}
	lines := strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if line == "" {
			continue
		}
		if k, delim, ok := strings.Cut(line, "<<"); ok && !strings.Contains(k, "=") {
			var val []string
			closed := false
			for i++; i < len(lines); i++ {
				if lines[i] == delim {
					closed = true
					break
				}
				val = append(val, lines[i])
			}
			if !closed || k == "" || delim == "" {
				return nil, fmt.Errorf("invalid value: matching delimiter not found '%s'", delim)
			}
			out[k] = strings.Join(val, "\n")
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("invalid format '%s'", safeLine(line))
		}
		out[k] = v
	}
	return out, nil
}

func safeLine(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return safeLine(s)
}
