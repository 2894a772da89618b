// Command demo runs the whole attested-runner flow on this machine and
// narrates it: a fake GitHub and the gate, a machine booting on a software
// TPM, the agent's admission, a job that builds and attests an artifact,
// teardown and deregistration, and a consumer verifying the artifact (and
// rejecting a tampered copy). scripts/demo.sh builds and runs it (make demo).
//
// Usage:
//
//	demo [--bin DIR] [--out DIR] [--repo-root DIR]
//
// It exits 0 when every step did what it should, 1 otherwise, naming the
// step and the reason. Everything it creates stays in --out.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/e2e/harness"
	"github.com/attested-runner/attested-runner/jobgate"
)

// config is the demo's command line.
type config struct {
	bin, out, repoRoot string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var c config
	flag.StringVar(&c.bin, "bin", "bin", "directory with jobgate, attested-runner, attested-verify and fake-runner-listener")
	flag.StringVar(&c.out, "out", fmt.Sprintf("/tmp/attested-runner-demo-%d", os.Getuid()),
		"directory for everything the demo creates (replaced if it holds an earlier demo); the runner user must be able to reach it, so not below a private home directory")
	flag.StringVar(&c.repoRoot, "repo-root", "", "the attested-runner checkout (default: found above the current directory)")
	flag.Parse()
	if err := run(ctx, c, os.Stdout); err != nil {
		fmt.Fprintf(os.Stdout, "\n%sDEMO FAILED%s: %v\n", red, reset, err)
		os.Exit(1)
	}
}

// Terminal styling, only on a terminal.
var bold, dim, green, red, yellow, reset string

func init() {
	if fi, err := os.Stdout.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("NO_COLOR") == "" {
		bold, dim, green, red, yellow, reset = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[33m", "\033[0m"
	}
}

// narrator prints numbered steps with their timings.
type narrator struct {
	w         io.Writer
	start     time.Time
	stepStart time.Time
	n, total  int
}

func (n *narrator) step(title, why string) {
	n.done()
	n.n++
	n.stepStart = time.Now()
	fmt.Fprintf(n.w, "\n%s[%d/%d] %s%s\n", bold, n.n, n.total, title, reset)
	for _, line := range wrap(why, 76) {
		fmt.Fprintf(n.w, "      %s%s%s\n", dim, line, reset)
	}
}

// done closes the current step with its duration.
func (n *narrator) done() {
	if n.n > 0 {
		fmt.Fprintf(n.w, "      %s✓ done in %s%s\n", green, time.Since(n.stepStart).Round(time.Millisecond), reset)
	}
}

func (n *narrator) say(format string, args ...any) {
	fmt.Fprintf(n.w, "      "+format+"\n", args...)
}

// event prints something that happened, stamped with the demo's clock.
func (n *narrator) event(at time.Time, who, what string) {
	fmt.Fprintf(n.w, "      %s+%6.3fs%s %-6s %s\n", dim, at.Sub(n.start).Seconds(), reset, who, what)
}

func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

const marker = ".attested-runner-demo"

// prepareOut empties the output directory if it holds an earlier demo, and
// refuses to touch anything else.
func prepareOut(out string) (string, error) {
	abs, err := filepath.Abs(out)
	if err != nil {
		return "", err
	}
	if fi, err := os.Lstat(abs); err == nil {
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !fi.IsDir() || !ok || int(st.Uid) != os.Getuid() {
			return "", fmt.Errorf("%s exists and is not a directory of yours: choose another --out", out)
		}
	}
	entries, err := os.ReadDir(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return "", err
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(abs, marker)); err != nil {
			return "", fmt.Errorf("%s exists and was not made by the demo: choose another --out", out)
		}
		if err := os.RemoveAll(abs); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return "", err
	}
	return abs, os.WriteFile(filepath.Join(abs, marker), []byte("made by e2e/cmd/demo; removed by the next run\n"), 0o644)
}

func run(ctx context.Context, c config, w io.Writer) error {
	if _, err := attesttest.SWTPMBinary(); err != nil {
		return err
	}
	if c.repoRoot == "" {
		root, err := harness.FindRepoRoot(".")
		if err != nil {
			return err
		}
		c.repoRoot = root
	}
	bin, err := harness.FromDir(c.bin)
	if err != nil {
		return err
	}
	out, err := prepareOut(c.out)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	n := &narrator{w: w, start: time.Now(), total: 10}
	fmt.Fprintf(w, "%sattested-runner demo%s: a single-use GitHub runner that proves, with hardware evidence,\n", bold, reset)
	fmt.Fprintf(w, "where and how an artifact was built, on this machine in a few seconds.\n\n")
	fmt.Fprintf(w, "%s%s", yellow, wrapBlock(`SOFTWARE TPM: this demo's "machine" has a software TPM (swtpm), not a TPM chip or a cloud vTPM. It speaks TPM 2.0 exactly like one, but its secrets are files on this host, so anyone who is root here could forge its quotes. The gate admits it only because this demo's policy sets allowSoftwareTPMUnsafe, every certificate it issues says SLSA_BUILDENV_LEVEL_0, and consumers must pass --insecure-allow-software-tpm to accept it. The flow, the checks and the formats are the real ones.`))
	fmt.Fprint(w, reset)

	d := &demo{c: c, bin: bin, out: out, n: n, w: w}
	defer d.close()
	for _, s := range []func(context.Context) error{d.stepGithub, d.stepMachine, d.stepGate, d.stepAdmission, d.stepJob, d.stepBundle, d.stepTeardown, d.stepVerify, d.stepTampered, d.stepAudit} {
		if err := s(ctx); err != nil {
			return fmt.Errorf("step %d: %w", n.n, err)
		}
	}
	n.done()
	d.summary()
	return nil
}

func wrapBlock(s string) string {
	var b strings.Builder
	for _, l := range wrap(s, 82) {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

// demo is the state carried from step to step.
type demo struct {
	c     config
	bin   *harness.Binaries
	out   string
	n     *narrator
	w     io.Writer
	world *harness.World
	m     *harness.Machine
	agent *harness.Agent
	exit  *harness.AgentExit
	// artifact, bundle, roots: copied into out/ for verifying by hand.
	artifact, bundle, tampered, roots string
	runner                            string
}

const runID = 4711

func (d *demo) close() {
	if d.world != nil {
		d.world.Close()
	}
}

// rel shows a path relative to the current directory when it is below it.
func rel(p string) string {
	wd, err := os.Getwd()
	if err != nil {
		return p
	}
	if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}

func (d *demo) stepGithub(context.Context) error {
	d.n.step("A fake GitHub",
		"The gate is the only holder of GitHub credentials: a GitHub App key. Here GitHub is a fake that serves the real REST endpoints and JSON (App tokens, JIT runner configs, runner list and delete) plus a job queue for the fake Runner.Listener.")
	w, err := harness.NewWorld(harness.WorldOptions{Dir: d.out, Bin: d.bin, RepoRoot: d.c.repoRoot})
	if err != nil {
		return err
	}
	d.world = w
	d.n.say("GitHub API    %s  (org %s, App %d, installation %d)", w.GitHub.URL(), w.GitHub.Org, w.GitHub.AppID, w.GitHub.InstallationID)
	d.n.say("App key       %s  (mode 0600, read by the gate only)", rel(w.GitHub.AppKeyPath))
	return nil
}

func (d *demo) stepMachine(ctx context.Context) error {
	d.n.step("A machine boots on a software TPM, and is enrolled",
		"The VM's TPM is swtpm. Its firmware measures the boot into PCRs: we replay a real UEFI boot's TCG event log (RHEL 8, Secure Boot on) into it. The admin enrolls the machine's attestation key (AK) and publishes the image's reference values: the expected boot PCRs and the SHA-256 of the agent binary.")
	m, err := d.world.NewMachine(ctx, "vm1", harness.MachineOptions{})
	if err != nil {
		return err
	}
	d.m = m
	d.n.say("swtpm         pid %d, state %s, socket mode 0600 (root only)", m.TPM.Pid(), rel(m.TPM.Dir))
	d.n.say("firmware      %d-byte TCG event log replayed into PCRs %v", len(m.BootLog), attesttest.BootPCRs)
	d.n.say("enrolled AK   sha256:%.16s…  -> %s", attest.KeyDigest(m.AK), rel(m.AKPath))
	ref := filepath.Join(d.out, "reference-values.json")
	if err := d.world.WriteReferenceValues(m, harness.ImageID, ref); err != nil {
		return err
	}
	d.n.say("reference     image %q + agent sha256:%.16s…  -> %s", harness.ImageID, fmt.Sprintf("%x", d.world.AgentDigest), rel(ref))
	return nil
}

func (d *demo) stepGate(ctx context.Context) error {
	d.n.step("The gate (jobgate) starts",
		"jobgate verifies evidence against its policy (trusted AKs, reference values) and only then mints a single-use JIT runner on GitHub, sealed to the attested environment. Its store (nonces, admitted keys, a hash-chained audit log) is an embedded bbolt file.")
	ref := filepath.Join(d.out, "reference-values.json")
	g, err := d.world.StartGate(ctx, harness.GateOptions{ReferenceValues: []string{ref}}, d.m)
	if err != nil {
		return err
	}
	d.n.say("jobgate       %s  (pid %d)", g.URL, g.Pid())
	d.n.say("config        %s  (policy.allowSoftwareTPMUnsafe: true, for this demo)", rel(g.ConfigPath))
	d.n.say("store         %s", rel(filepath.Join(g.Config().DataDir, "gate.db")))
	roots, err := g.Roots(ctx)
	if err != nil {
		return err
	}
	d.roots = filepath.Join(d.out, "gate-roots.pem")
	if err := copyFile(roots, d.roots); err != nil {
		return err
	}
	d.n.say("trust root    %s  (the gate's public key, GET /v1/roots: what consumers trust)", rel(d.roots))
	return nil
}

func (d *demo) stepAdmission(ctx context.Context) error {
	d.n.step("The agent boots, attests, and is admitted",
		"attested-runner (as root, in the VM) records its own digest (agent-start), creates a non-exportable environment key in the TPM and an HPKE key, asks the gate for a nonce and answers with a TPM quote over that nonce and both keys, the firmware event log and its lifecycle log. The gate checks all of it before GitHub hears of a runner.")
	if _, err := d.world.GitHub.QueueJob(harness.NewJob(d.world.GitHub.Repos[0], runID, harness.BuildAndAttest(d.world.AttestAction, "hello from an attested runner")...)); err != nil {
		return err
	}
	user := fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid())
	if os.Geteuid() == 0 {
		user = "65534:65534" // nobody: the job never runs as root
	}
	a, err := d.world.StartAgent(harness.AgentOptions{Machine: d.m, RunnerUser: user})
	if err != nil {
		return err
	}
	d.agent = a
	d.n.say("agent         pid %d, runner user %s, runner dir %s (tmpfs)", a.Pid(), user, a.RunnerDir)
	return d.follow(ctx, "runner listening", map[string]string{
		"attested-runner starting": "agent starts (digest of its own binary recorded)",
		"environment key created":  "environment key created in the TPM: key sha256:{key}…",
		"admitted":                 "ADMITTED as runner {runner} (image {image}, {level})",
		"runner listening":         "runner launched as the unprivileged user, labels {labels}",
	}, func() error {
		recs, err := d.world.Gate.LogRecords()
		if err != nil {
			return err
		}
		for _, r := range recs {
			if r["msg"] == "admitted" {
				d.runner, _ = r["runner"].(string)
				d.n.say("gate decision admitted runner=%v key=%v image=%v level=%v labels=%v", r["runner"], r["key"], r["image"], r["level"], r["labels"])
			}
		}
		if d.runner == "" {
			return errors.New("the gate logged no admission")
		}
		if r, ok := d.world.GitHub.Runner(d.runner); ok {
			d.n.say("GitHub        runner %s (id %d) registered, labels %v", r.Name, r.ID, r.Labels)
		}
		return nil
	})
}

// follow prints the agent's log records named in show as they appear,
// until it logs until, then runs then.
func (d *demo) follow(ctx context.Context, until string, show map[string]string, then func() error) error {
	seen := 0
	var found bool
	err := harness.Poll(ctx, 60*time.Second, 20*time.Millisecond, func() (bool, error) {
		recs, _ := d.agent.LogRecords()
		for ; seen < len(recs); seen++ {
			r := recs[seen]
			msg, _ := r["msg"].(string)
			if tmpl, ok := show[msg]; ok {
				at, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(r["time"]))
				d.n.event(at, "agent", expand(tmpl, r))
			}
			if msg == until {
				found = true
				break
			}
			if msg == "teardown" {
				return false, fmt.Errorf("the agent tore down early: %v (%v); see %s", r["reason"], r["err"], rel(d.agent.LogPath))
			}
		}
		select {
		case <-d.agent.Done():
			if !found {
				return false, fmt.Errorf("the agent exited before %q: see %s", until, rel(d.agent.LogPath))
			}
		default:
		}
		return found, nil
	})
	if err != nil {
		return err
	}
	return then()
}

// expand fills {field} in a template from a log record.
func expand(tmpl string, r map[string]any) string {
	out := tmpl
	for k, v := range r {
		s := fmt.Sprint(v)
		if k == "key" && len(s) > 16 {
			s = s[:16]
		}
		out = strings.ReplaceAll(out, "{"+k+"}", s)
	}
	return out
}

func (d *demo) stepJob(ctx context.Context) error {
	d.n.step("The runner takes a job: build, then attest with the job-side action",
		"The JIT runner takes whatever queued job matches its labels; its job-started hook reports the job it really got to the agent, which extends job-start (the separator: no job code before it) and signs a dispatch attestation. The job builds dist/app.tar.gz and runs `uses: attested-runner/action/attest` with subject-path: the agent hashes the file itself and signs SLSA provenance with the TPM-held key.")
	return d.follow(ctx, "job completed", map[string]string{
		"job started":   "job started: {build}",
		"attested":      "provenance signed: {subjects} subject(s) -> {bundle}",
		"job completed": "job completed",
	}, func() error {
		// The runner reports the result to GitHub right after the hook.
		var res fakegithub.JobRecord
		if err := harness.Poll(ctx, 30*time.Second, 20*time.Millisecond, func() (bool, error) {
			res, _ = d.world.GitHub.JobResult(runID)
			return res.Result != "", nil
		}); err != nil {
			return errors.New("the runner never reported the job's result")
		}
		if res.Result != fakegithub.ResultSucceeded {
			return fmt.Errorf("job %s: %s", res.Result, res.Reason)
		}
		d.n.say("GitHub        job %s run %d %s on runner %s", res.Job.Repository, res.Job.RunID, res.Result, res.RunnerName)
		return nil
	})
}

func (d *demo) stepBundle(ctx context.Context) error {
	d.n.step("The bundle",
		"A sigstore bundle (DSSE, in-toto Statement, SLSA provenance v1) next to the artifact. It embeds the gate's environment certificate (a VSA for the environment key) and a fresh TPM quote whose nonce is the digest of the statement itself.")
	ws := d.agent.Workspace(d.world.GitHub.Repos[0])
	art := filepath.Join(ws, harness.Artifact)
	if err := harness.Poll(ctx, 30*time.Second, 20*time.Millisecond, func() (bool, error) {
		_, err := os.Stat(art + ".sigstore.json")
		return err == nil, nil
	}); err != nil {
		return errors.New("no bundle in the job workspace")
	}
	dir := filepath.Join(d.out, "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	d.artifact, d.bundle = filepath.Join(dir, "app.tar.gz"), filepath.Join(dir, "app.tar.gz.sigstore.json")
	if err := copyFile(art, d.artifact); err != nil {
		return err
	}
	if err := copyFile(art+".sigstore.json", d.bundle); err != nil {
		return err
	}
	fi, _ := os.Stat(d.bundle)
	dg, _ := harness.FileDigest(d.artifact)
	d.n.say("artifact      %s  sha256:%x", rel(d.artifact), dg)
	d.n.say("bundle        %s  (%d bytes)", rel(d.bundle), fi.Size())
	return nil
}

func (d *demo) stepTeardown(ctx context.Context) error {
	d.n.step("Teardown and deregistration",
		"After its one job the agent stops the runner, extends teardown, destroys the keys, asks the gate (signing with the environment key) to deregister the runner, and powers the VM off. A single-use runner leaves nothing behind.")
	if err := d.follow(ctx, "teardown", map[string]string{
		"teardown": "teardown: {reason}",
	}, func() error { return nil }); err != nil {
		return err
	}
	x, err := d.agent.Wait(ctx)
	if err != nil {
		return err
	}
	d.exit = x
	recs, _ := d.agent.LogRecords()
	for _, r := range recs {
		msg, _ := r["msg"].(string)
		at, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(r["time"]))
		switch msg {
		case "environment keys destroyed":
			d.n.event(at, "agent", "environment keys destroyed (flushed from the TPM)")
		case "deregistered":
			d.n.event(at, "agent", fmt.Sprintf("deregistered at the gate: %v", r["detail"]))
		case "powering off":
			d.n.event(at, "agent", "power off (recorded here instead of a real one)")
		}
	}
	if x.Code != 0 || !x.PoweredOff {
		return fmt.Errorf("agent ended %q (exit %d, powered off %v)", x.Summary, x.Code, x.PoweredOff)
	}
	d.n.say("agent         %s", x.Summary)
	if names := d.world.GitHub.RunnerNames(); len(names) != 0 {
		return fmt.Errorf("runners still on GitHub: %v", names)
	}
	d.n.say("GitHub        no runner left (%d minted, %d deleted)", d.world.GitHub.JITMints(), d.world.GitHub.RunnerDeletes())
	return nil
}

func (d *demo) stepVerify(ctx context.Context) error {
	d.n.step("A consumer verifies the artifact (attested-verify, offline)",
		"With the artifact, its bundle and the gate's public key only: subject digest, environment certificate, DSSE signature by the certified key, the TPM quote over this exact statement after job-start, the expected repository and run.")
	v, err := d.bin.VerifyArtifact(ctx, d.verifyOptions(d.artifact))
	if err != nil {
		return err
	}
	d.n.say("$ %s", d.verifyCommand(d.artifact, ""))
	printIndented(d.w, v.Stdout+v.Stderr)
	if v.ExitCode != 0 {
		return fmt.Errorf("attested-verify exit %d: the genuine artifact did not verify", v.ExitCode)
	}
	return nil
}

func (d *demo) verifyOptions(artifact string) harness.VerifyOptions {
	return harness.VerifyOptions{Artifact: artifact, Bundle: d.bundle, GateKey: d.roots, Hostname: d.world.GitHub.URL(), Repo: d.world.GitHub.Repos[0], RunID: fmt.Sprint(runID)}
}

func (d *demo) verifyCommand(artifact, bundle string) string {
	args := []string{rel(d.bin.Verify), "artifact", rel(artifact)}
	if bundle != "" {
		args = append(args, "--bundle", rel(bundle))
	}
	args = append(args, "--gate-key", rel(d.roots), "--repo", d.world.GitHub.Repos[0], "--hostname", d.world.GitHub.URL(), "--run-id", fmt.Sprint(runID), "--insecure-allow-software-tpm")
	return strings.Join(args, " ")
}

func (d *demo) stepTampered(ctx context.Context) error {
	d.n.step("A tampered copy of the artifact is rejected",
		"One byte appended to the artifact, presented with the genuine bundle: its digest is no subject of the signed provenance.")
	b, err := os.ReadFile(d.artifact)
	if err != nil {
		return err
	}
	d.tampered = filepath.Join(filepath.Dir(d.artifact), "app-tampered.tar.gz")
	if err := os.WriteFile(d.tampered, append(b, '!'), 0o644); err != nil {
		return err
	}
	v, err := d.bin.VerifyArtifact(ctx, d.verifyOptions(d.tampered))
	if err != nil {
		return err
	}
	d.n.say("$ %s", d.verifyCommand(d.tampered, d.bundle))
	printIndented(d.w, v.Stdout+v.Stderr)
	if v.ExitCode != 1 || !strings.Contains(v.Stdout, "NOT VERIFIED") {
		return fmt.Errorf("the tampered artifact was not rejected (exit %d)", v.ExitCode)
	}
	return nil
}

func (d *demo) stepAudit(ctx context.Context) error {
	d.n.step("The gate's audit log",
		"Every decision the gate made, hash-chained (jobgate audit show / verify, asking the running gate through its admin socket).")
	recs, err := d.world.Gate.AuditLog(ctx)
	if err != nil {
		return err
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Seq < recs[j].Seq })
	for _, r := range recs {
		d.n.say("#%d %s %-10s %-9s %s %s", r.Seq, r.Time.Format("15:04:05.000"), r.Action, r.Result, r.RunnerName, auditDetail(r))
	}
	report, err := d.world.Gate.VerifyAudit(ctx)
	if err != nil {
		return err
	}
	d.n.say("%s", report)
	if len(harness.AuditFilter(recs, "admit", "accepted")) != 1 || len(harness.AuditFilter(recs, "deregister", "removed")) != 1 {
		return errors.New("the audit log lacks the admission or the deregistration")
	}
	return nil
}

func auditDetail(r jobgate.AuditRecord) string {
	if r.Reason != "" {
		return r.Reason + ": " + r.Detail
	}
	return r.Detail
}

func (d *demo) summary() {
	w := d.w
	fmt.Fprintf(w, "\n%sAll steps passed%s in %s.\n\n", green+bold, reset, time.Since(d.n.start).Round(time.Millisecond))
	fmt.Fprintf(w, "Everything is in %s/:\n", rel(d.out))
	for _, f := range []struct{ path, what string }{
		{d.artifact, "the artifact the job built"},
		{d.bundle, "its provenance bundle"},
		{d.tampered, "the tampered copy"},
		{d.roots, "the gate's public key (consumers' --gate-key)"},
		{filepath.Join(d.out, "reference-values.json"), "the image's reference values"},
		{d.world.Gate.ConfigPath, "the gate's configuration"},
		{d.world.Gate.LogPath, "the gate's log (JSON)"},
		{d.agent.LogPath, "the agent's log (JSON)"},
	} {
		fmt.Fprintf(w, "  %-48s %s\n", rel(f.path), f.what)
	}
	fmt.Fprintf(w, "\nVerify again by hand:\n")
	fmt.Fprintf(w, "  %s\n", d.verifyCommand(d.artifact, ""))
	fmt.Fprintf(w, "  %s --format json | less\n", d.verifyCommand(d.artifact, ""))
	fmt.Fprintf(w, "  %s            # exit 1\n", d.verifyCommand(d.tampered, d.bundle))
	fmt.Fprintf(w, "  %s audit show --config %s\n", rel(d.bin.Jobgate), rel(d.world.Gate.ConfigPath))
	fmt.Fprintf(w, "  %s audit verify --config %s\n", rel(d.bin.Jobgate), rel(d.world.Gate.ConfigPath))
	fmt.Fprintf(w, "\n%sRemember: a software TPM proves nothing about this host; on a fleet the TPM is a vTPM or a chip.%s\n", yellow, reset)
}

func printIndented(w io.Writer, s string) {
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		fmt.Fprintf(w, "        %s\n", line)
	}
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}
