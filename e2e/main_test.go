// The end-to-end suite: the real jobgate, attested-runner and
// attested-verify binaries, the fake GitHub and fake Runner.Listener, and
// one swtpm process per machine, run as separate processes by package
// harness. Every test builds its own world (fake GitHub, gate, machines,
// agents) in its own directory, kept when it fails (or always with
// ATTESTED_E2E_KEEP=1).
//
//   - lifecycle_test.go: the genuine flow every attack is measured against.
//   - admission_test.go: attacks on admission (replayed request, nonce
//     reuse, unenrolled TPM, PCR and lifecycle log tampering, withdrawn
//     reference values, a key admitted twice, a captured JIT config).
//   - isolation_test.go: single use (a second job) and the job user's
//     reach (TPM, agent state).
//   - bundle_test.go: attacks on provenance (subject, statement, repository,
//     run, signing key), against one genuine release.
//   - resilience_test.go: the gate down, GitHub failing, the VM killed, the
//     gate restarted.
//   - load_test.go: many agents at once; BenchmarkLoad.
//   - replicated_test.go: two gates on one PostgreSQL database (one key at
//     both at once, a gate killed mid-admission, the database restarted
//     and cut).
//
// Rejections are asserted by their specific reason: the gate's error code
// and its audit record, the verifier's failed check and sentinel error.

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/e2e/harness"
	"github.com/attested-runner/attested-runner/internal/pgtest"
	"github.com/attested-runner/attested-runner/jobgate"
)

// The binaries under test, built once for the whole suite, and what to
// remove after it.
var (
	bin      *harness.Binaries
	repoRoot string
	cleanups []func()
)

// TestMain builds the real binaries once (CGO_ENABLED=0, as shipped).
func TestMain(m *testing.M) {
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	root, err := harness.SourceRepoRoot()
	if err != nil {
		return 0, err
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "e2e-bin-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if bin, err = harness.Build(ctx, repoRoot, dir); err != nil {
		return 0, err
	}
	code := pgtest.Main(m) // m.Run, then the PostgreSQL cluster stops
	for _, f := range cleanups {
		f()
	}
	return code, nil
}

// env is one test's whole system: its own fake GitHub, gate and proxy,
// machines and agents, all under one directory (kept when the test fails,
// or always with ATTESTED_E2E_KEEP=1).
type env struct {
	*harness.World
	t   testing.TB
	ctx context.Context
	// M is the first machine, enrolled in the gate's policy.
	M *harness.Machine
}

// envOptions shape an env.
type envOptions struct {
	github harness.GitHubOptions
	gate   harness.GateOptions
	// machines is how many enrolled machines to create (default 1).
	machines int
	// noGate: build machines but do not start the gate.
	noGate bool
}

// newEnv builds a world with enrolled machines m1..mN and a running gate.
func newEnv(t testing.TB, o envOptions) (*env, []*harness.Machine) {
	t.Helper()
	attesttest.RequireSWTPM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	dir, err := os.MkdirTemp("", "e2e-")
	if err != nil {
		t.Fatal(err)
	}
	w, err := harness.NewWorld(harness.WorldOptions{Dir: dir, Bin: bin, RepoRoot: repoRoot, GitHub: o.github})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{World: w, t: t, ctx: ctx}
	t.Cleanup(func() {
		w.Close()
		if t.Failed() {
			e.dumpLogs()
		}
		if t.Failed() || os.Getenv("ATTESTED_E2E_KEEP") != "" {
			t.Logf("files kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	if o.machines == 0 {
		o.machines = 1
	}
	var ms []*harness.Machine
	for i := range o.machines {
		m, err := w.NewMachine(ctx, fmt.Sprintf("m%d", i+1), harness.MachineOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	e.M = ms[0]
	if !o.noGate {
		if _, err := w.StartGate(ctx, o.gate, ms...); err != nil {
			t.Fatal(err)
		}
	}
	return e, ms
}

// dumpLogs prints the tails of the gate's and agents' logs, to see why a
// test failed.
func (e *env) dumpLogs() {
	if e.Gate != nil {
		e.t.Logf("gate log (%s):\n%s", e.Gate.LogPath, tailFile(e.Gate.LogPath, 4000))
	}
	for _, a := range e.Agents() {
		e.t.Logf("agent %s log (%s):\n%s", a.Name, a.LogPath, tailFile(a.LogPath, 4000))
	}
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// startAgent starts an agent with test defaults.
func (e *env) startAgent(o harness.AgentOptions) *harness.Agent {
	e.t.Helper()
	if o.Machine == nil {
		o.Machine = e.M
	}
	a, err := e.StartAgent(o)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

// wait waits for an agent to exit.
func (e *env) wait(a *harness.Agent) *harness.AgentExit {
	e.t.Helper()
	x, err := a.Wait(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return x
}

// queue queues a job on the fake GitHub.
func (e *env) queue(runID int64, steps ...fakeStep) {
	e.t.Helper()
	if _, err := e.GitHub.QueueJob(harness.NewJob(e.repo(), runID, steps...)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) repo() string { return e.GitHub.Repos[0] }

// audit stops the gate (its store admits one process at a time), reads its
// audit log with `jobgate audit show` and checks the hash chain with
// `jobgate audit verify`. Call it once the test's traffic is over.
func (e *env) audit() []jobgate.AuditRecord {
	e.t.Helper()
	if err := e.Gate.Stop(); err != nil {
		e.t.Fatal(err)
	}
	recs, err := e.Gate.AuditLog(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	report, err := e.Gate.VerifyAudit(e.ctx)
	if err != nil {
		e.t.Fatalf("audit log chain: %v", err)
	}
	if want := fmt.Sprintf("audit log OK: %d records", len(recs)); !strings.HasPrefix(report, want) {
		e.t.Fatalf("audit verify says %q, audit show has %d records", report, len(recs))
	}
	return recs
}

// requireAudit asserts that exactly one audit record matches action,
// result and reason, and returns it.
func (e *env) requireAudit(recs []jobgate.AuditRecord, action, result, reason string) jobgate.AuditRecord {
	e.t.Helper()
	var found []jobgate.AuditRecord
	for _, r := range harness.AuditFilter(recs, action, result) {
		if r.Reason == reason {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		e.t.Fatalf("want exactly one audit record %s/%s/%q, found %d in:\n%s", action, result, reason, len(found), auditText(recs))
	}
	return found[0]
}

func auditText(recs []jobgate.AuditRecord) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "  #%d %s %s reason=%q runner=%s key=%.16s detail=%q\n", r.Seq, r.Action, r.Result, r.Reason, r.RunnerName, r.KeyDigest, r.Detail)
	}
	return b.String()
}

// noRunnersLeft asserts GitHub lists no runner.
func (e *env) noRunnersLeft() {
	e.t.Helper()
	if names := e.GitHub.RunnerNames(); len(names) != 0 {
		e.t.Fatalf("runners left on GitHub: %v", names)
	}
}

// waitNoRunners waits until GitHub lists no runner (the gate's reconcile
// loop or a teardown removing it).
func (e *env) waitNoRunners(max time.Duration) {
	e.t.Helper()
	err := harness.Poll(e.ctx, max, 100*time.Millisecond, func() (bool, error) {
		return len(e.GitHub.Runners()) == 0, nil
	})
	if err != nil {
		e.t.Fatalf("runners still on GitHub after %s: %v", max, e.GitHub.RunnerNames())
	}
}

// isRoot reports whether the tests run as root.
func isRoot() bool { return os.Geteuid() == 0 }

// artifactOf is the artifact a BuildAndAttest job left in an agent's
// workspace, with its bundle.
func artifactOf(e *env, a *harness.Agent) (artifact, bundle string) {
	ws := a.Workspace(e.repo())
	artifact = filepath.Join(ws, harness.Artifact)
	return artifact, artifact + ".sigstore.json"
}
