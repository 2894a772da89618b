package e2e

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/e2e/harness"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// The job is the adversary (issue: the hostile job). In these tests the
// runner and the job run as nobody (65534:65534), the agent as root, and
// the job tries, as an attacker would, to use the agent as a confused
// deputy. Each attack is refused with a specific error or is harmless, and
// root's files stay as they were.

const nobody = "65534:65534"

func requireRootForJobUser(t *testing.T) {
	t.Helper()
	if !isRoot() {
		t.Skip("needs root: the agent runs as root and the job as another user (uid 65534)")
	}
}

// rootFiles are files of root's the job must not read or change: secret in
// a 0700 directory, victim and private in a 0755 one (private is 0600).
type rootFiles struct {
	onlyDir, ownedDir string
	want              map[string]string
}

func newRootFiles(t *testing.T, e *env) *rootFiles {
	t.Helper()
	// On the runner directory's filesystem (tmpfs), so a hard link from
	// the workspace is possible in principle.
	rf := &rootFiles{onlyDir: filepath.Join(e.RunnerRoot, "root-only"), ownedDir: filepath.Join(e.RunnerRoot, "root-owned"), want: map[string]string{}}
	for dir, mode := range map[string]os.FileMode{rf.onlyDir: 0o700, rf.ownedDir: 0o755} {
		if err := os.MkdirAll(dir, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(dir, mode)
	}
	for path, mode := range map[string]os.FileMode{
		filepath.Join(rf.onlyDir, "secret"):   0o600,
		filepath.Join(rf.ownedDir, "victim"):  0o644,
		filepath.Join(rf.ownedDir, "private"): 0o600,
	} {
		content := "root's " + filepath.Base(path) + "\n"
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		rf.want[path] = fmt.Sprintf("%s %v 0:0", content, mode)
	}
	return rf
}

// check asserts every file is as it was: content, mode, owner root, and
// nothing new in either directory.
func (rf *rootFiles) check(t *testing.T) {
	t.Helper()
	for _, dir := range []string{rf.onlyDir, rf.ownedDir} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if _, ok := rf.want[filepath.Join(dir, e.Name())]; !ok {
				t.Errorf("a file appeared in root's directory: %s", filepath.Join(dir, e.Name()))
			}
		}
	}
	for path, want := range rf.want {
		b, err := os.ReadFile(path)
		fi, err2 := os.Lstat(path)
		if err != nil || err2 != nil {
			t.Errorf("%s: %v %v", path, err, err2)
			continue
		}
		uid, gid := ownerOf(fi)
		if got := fmt.Sprintf("%s %v %d:%d", b, fi.Mode(), uid, gid); got != want {
			t.Errorf("root's file %s changed: %q, want %q", path, got, want)
		}
	}
}

// refused is a job step that runs cmd, prints what happened, and fails the
// job unless cmd failed and its output matches the extended regexp want.
func refused(what, cmd, want string) fakeStep {
	return fakeStep{Name: what, Run: fmt.Sprintf(`set +e
out=$( (%s) 2>&1 ); rc=$?
echo "%s: exit $rc: $out"
test $rc -ne 0 && printf '%%s' "$out" | grep -qiE '%s'`, cmd, what, want)}
}

// hostile is a job step that hands the agent a descriptor the real client
// never would (e2e/cmd/hostile-client) and fails the job unless the agent
// refused it with an error matching want, within the client's 20 s bound.
func hostile(e *env, what, args, want string) fakeStep {
	return fakeStep{Name: what, Run: fmt.Sprintf(`set +e
out=$('%s' %s 2>&1); rc=$?
echo "%s: exit $rc: $out"
test $rc -eq 0 && printf '%%s' "$out" | grep -q '^refused: ' && printf '%%s' "$out" | grep -qiE '%s'`, e.Bin.HostileClient, args, what, want)}
}

// TestHostileJobCannotUseTheAgentAsDeputy: the job (nobody) swaps its
// workspace for a symlink to a root-only directory, names root's files as
// subjects and bundle paths through symlinks, hard links and /proc paths,
// and hands the agent a FIFO, a device, an O_PATH descriptor of a root-only
// file, a write-only descriptor and a file that grows while it is hashed.
// Each is refused (by the job's own lack of access, or by the agent with a
// specific error, never a hang) or harmless; root's files stay untouched;
// a genuine attest in the same job still works.
func TestHostileJobCannotUseTheAgentAsDeputy(t *testing.T) {
	requireRootForJobUser(t)
	e, _ := newEnv(t, envOptions{})
	rf := newRootFiles(t, e)
	attest := `"$ATTESTED_RUNNER_AGENT" attest --socket "$ATTESTED_RUNNER_SOCKET" `
	secret, victim, private := filepath.Join(rf.onlyDir, "secret"), filepath.Join(rf.ownedDir, "victim"), filepath.Join(rf.ownedDir, "private")
	agentPID := `p=$$; while [ "$p" -gt 1 ] && [ "$(awk '/^Uid:/{print $2}' /proc/$p/status)" != 0 ]; do p=$(awk '{print $4}' /proc/$p/stat); done; echo $p`
	steps := []fakeStep{
		{Name: "runs as nobody", Run: `test "$(id -u):$(id -g)" = 65534:65534`},
		{Name: "prepare", Run: `mkdir -p dist && echo ok > dist/ok && mkfifo dist/fifo && head -c 67108864 /dev/zero > dist/big`},
		refused("workspace swapped for a symlink to a root-only directory", `ws=$GITHUB_WORKSPACE; cd / && mv "$ws" "$ws.moved" && ln -s `+rf.onlyDir+` "$ws" && { `+attest+`--subject-path "$ws/secret" --bundle-path "$ws/victim"; rc=$?; rm "$ws"; mv "$ws.moved" "$ws"; exit $rc; }`, "permission denied"),
		refused("subject is a symlink to a root-only file", `ln -s `+secret+` dist/s1 && `+attest+`--subject-path dist/s1`, "permission denied"),
		refused("subject is a symlink to a root-owned 0600 file", `ln -s `+private+` dist/s2 && `+attest+`--subject-path dist/s2`, "permission denied"),
		refused("bundle path is root's file", attest+`--subject-path dist/ok --bundle-path `+victim, "permission denied"),
		{Name: "bundle path is a symlink to root's file: the symlink is replaced, not followed", Run: `ln -s ` + victim + ` dist/b.json && ` + attest + `--subject-path dist/ok --bundle-path dist/b.json && test ! -L dist/b.json && test -s dist/b.json`},
		refused("hard link to a root-owned 0600 file", `ln `+private+` dist/h 2>&1 || exit 1; `+attest+`--subject-path dist/h`, "operation not permitted|permission denied"),
		refused("/proc path into root's mount namespace", `ln -s /proc/1/root`+private+` dist/p1 && `+attest+`--subject-path dist/p1`, "permission denied"),
		refused("/proc path to the agent's descriptors", `ln -s /proc/$(`+agentPID+`)/fd/0 dist/p2 && `+attest+`--subject-path dist/p2`, "permission denied"),
		refused("a FIFO through the real client", `timeout 20 `+attest+`--subject-path dist/fifo`, "not a regular file"),
		hostile(e, "a FIFO handed to the agent", `--flags rdonly,nonblock --name dist/fifo dist/fifo`, "not a regular file.*FIFO"),
		hostile(e, "a device handed to the agent", `--name dist/zero /dev/zero`, "not a regular file.*character device"),
		hostile(e, "an O_PATH descriptor of a root-owned 0600 file", `--flags path --name dist/x `+private, "not opened for reading"),
		hostile(e, "a write-only descriptor", `--flags wronly --name dist/ok dist/ok`, "not opened for reading"),
		hostile(e, "a file that grows while it is hashed", `--grow --name dist/big dist/big`, "changed while it was hashed"),
		hostile(e, "a subject name that leaves the workspace", `--name ../../etc/passwd dist/ok`, "invalid subject name"),
	}
	steps = append(steps, harness.BuildAndAttest(e.AttestAction, "built by nobody next to the attacks")...)
	e.queue(901, steps...)
	a := e.startAgent(harness.AgentOptions{RunnerUser: nobody, JobTimeout: 3 * time.Minute})
	x := e.wait(a)
	res, _ := e.GitHub.JobResult(901)
	diag := a.DiagLogs()
	for _, st := range steps[2:] {
		if i := strings.Index(diag, st.Name+": exit "); i >= 0 {
			line, _, _ := strings.Cut(diag[i:], "\n")
			t.Logf("job step: %s", line)
		}
	}
	if x.Code != 0 || res.Result != fakegithub.ResultSucceeded {
		t.Fatalf("job %+v, agent %+v; job log:\n%s", res, x, diag)
	}
	rf.check(t)
	// The genuine bundle of the same job verifies.
	art, _ := artifactOf(e, a)
	roots, err := e.Gate.Roots(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err := bin.VerifyArtifact(e.ctx, harness.VerifyOptions{Artifact: art, GateKey: roots, Repo: e.repo(), Hostname: e.GitHub.URL(), RunID: "901"})
	if err != nil || v.ExitCode != 0 {
		t.Fatalf("the genuine bundle does not verify: %v\n%s%s", err, v.Stdout, v.Stderr)
	}
}

func ownerOf(fi os.FileInfo) (uint32, uint32) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid, st.Gid
	}
	return ^uint32(0), ^uint32(0)
}

// TestEnvKeyGoneAfterTeardown: after a job (as nobody), the agent tears
// down. Root on the machine, with the TPM in the same boot, then tries to
// make the environment key again from every template the code uses: it
// gets other keys, so "destroyed" means destroyed.
func TestEnvKeyGoneAfterTeardown(t *testing.T) {
	requireRootForJobUser(t)
	e, _ := newEnv(t, envOptions{})
	e.queue(902, harness.BuildAndAttest(e.AttestAction, "a release")...)
	a := e.startAgent(harness.AgentOptions{RunnerUser: nobody})
	if x := e.wait(a); x.Code != 0 {
		t.Fatalf("agent %+v", x)
	}
	_, bundle := artifactOf(e, a)
	envKey := bundleEnvKey(t, bundle)
	conn, err := net.Dial("unix", e.M.TPM.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for tn, tmpl := range map[string]tpm2.Public{"environment key": attest.EnvKeyTemplate(), "ECC AK": client.AKTemplateECC()} {
		for hn, h := range map[string]tpmutil.Handle{"null": tpm2.HandleNull, "owner": tpm2.HandleOwner, "endorsement": tpm2.HandleEndorsement} {
			k, err := client.NewKey(conn, h, tmpl)
			if err != nil {
				t.Fatalf("%s template, %s hierarchy: %v", tn, hn, err)
			}
			got, _ := x509.MarshalPKIXPublicKey(k.PublicKey())
			k.Close()
			if bytes.Equal(got, envKey) {
				t.Errorf("the %s template in the %s hierarchy re-creates the environment key after teardown", tn, hn)
			}
		}
	}
}

// bundleEnvKey is the environment key an attested-runner bundle's
// certificate certifies.
func bundleEnvKey(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var b struct {
		DSSE struct {
			Payload []byte `json:"payload"`
		} `json:"dsseEnvelope"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	var st struct {
		Predicate struct {
			RunDetails struct {
				Byproducts []struct {
					Name    string `json:"name"`
					Content []byte `json:"content"`
				} `json:"byproducts"`
			} `json:"runDetails"`
		} `json:"predicate"`
	}
	if err := json.Unmarshal(b.DSSE.Payload, &st); err != nil {
		t.Fatal(err)
	}
	for _, bp := range st.Predicate.RunDetails.Byproducts {
		if bp.Name == provenance.ResponseQuoteProduct {
			ev, err := attest.DecodeEvidence(bp.Content)
			if err != nil {
				t.Fatal(err)
			}
			return ev.EnvKey
		}
	}
	t.Fatal("no response quote in the bundle")
	return nil
}

// TestSwappedAdmissionAnswerRefused: an attacker between the agent and the
// gate (a plain-http hop, a TLS terminator) keeps the genuine certificate
// and seals a JIT configuration of its own, minted by a GitHub it controls,
// to the attested HPKE key it read in the evidence. The agent refuses the
// answer before any runner starts (the gate's delivery signature does not
// cover it), the attacker's GitHub never sees the runner, and the gate
// removes its own runner at the agent's signed request, audited with why.
func TestSwappedAdmissionAnswerRefused(t *testing.T) {
	requireRootForJobUser(t)
	e, _ := newEnv(t, envOptions{})
	evil, err := harness.StartGitHub(filepath.Join(e.Dir, "attacker-github"), harness.GitHubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer evil.Close()
	evilKey, err := os.ReadFile(evil.AppKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	evilReg, err := jobgate.NewGitHubRegistry(jobgate.GitHubOptions{APIURL: evil.URL() + "/", AppID: evil.AppID, InstallationID: evil.InstallationID,
		PrivateKey: evilKey, Org: evil.Org})
	if err != nil {
		t.Fatal(err)
	}
	evil.QueueJob(harness.NewJob(evil.Repos[0], 666, fakeStep{Name: "attacker's job", Run: "echo owned"}))
	swapped := make(chan string, 1)
	e.Proxy.SetResponseHook(func(path string, status int, request, response []byte) []byte {
		if path != gateapi.PathAdmit || status != 200 {
			return response
		}
		var req gateapi.AdmitRequest
		var resp gateapi.AdmitResponse
		if json.Unmarshal(request, &req) != nil || json.Unmarshal(response, &resp) != nil {
			t.Error("attacker: cannot read the admission")
			return response
		}
		ev, err := attest.DecodeEvidence(req.Evidence)
		if err != nil {
			t.Error(err)
			return response
		}
		_, jit, err := evilReg.Mint(e.ctx, resp.RunnerName, []string{"self-hosted", "attested"}, "")
		if err != nil {
			t.Error(err)
			return response
		}
		if resp.SealedJITConfig, err = attest.Seal(ev.HPKEPublicKey, gateapi.JITContext(resp.RunnerName), []byte(jit)); err != nil {
			t.Error(err)
			return response
		}
		swapped <- resp.RunnerName
		out, _ := json.Marshal(&resp)
		return out
	})
	e.queue(903, harness.BuildAndAttest(e.AttestAction, "never built")...)
	a := e.startAgent(harness.AgentOptions{RunnerUser: nobody})
	x := e.wait(a)
	name := <-swapped
	if x.Code == 0 || !strings.Contains(x.Summary, "admission answer refused") {
		t.Fatalf("agent %+v", x)
	}
	if !strings.Contains(tailFile(a.LogPath, 1<<20), gateapi.ErrDeliveryForged.Error()) {
		t.Errorf("the agent's log does not say why it refused")
	}
	if _, err := os.Stat(filepath.Join(a.RunnerDir, "_diag")); err == nil {
		t.Fatal("a runner was started with the attacker's configuration")
	}
	if res, _ := evil.JobResult(666); res.RunnerID != 0 {
		t.Fatalf("the attacker's job ran: %+v", res)
	}
	if res, _ := e.GitHub.JobResult(903); res.RunnerID != 0 {
		t.Fatalf("the job was taken: %+v", res)
	}
	e.waitNoRunners(20 * time.Second)
	rec := e.requireAudit(e.audit(), "deregister", "removed", "")
	if rec.RunnerName != name || !strings.Contains(rec.Detail, "admission answer refused") {
		t.Fatalf("deregistration audit %+v", rec)
	}
}

// TestForgedActionInputsIgnored: the job (nobody) owns _diag. It rewrites
// the Worker log's download lines after job start (sed), and the event
// payload (a pull request body the runner logs before the hook) carries
// look-alike download lines, one in the exact trace form. The provenance
// still records the actions the runner downloaded, the immutable package
// with its source commit, and nothing the job wrote.
func TestForgedActionInputsIgnored(t *testing.T) {
	requireRootForJobUser(t)
	e, _ := newEnv(t, envOptions{})
	const forgedSHA = "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef"
	body := "Fixes the build.\n" +
		"Download action repository 'evil-org/pr-body@v1' (SHA:" + forgedSHA + ")\n" +
		"[2026-12-01 10:00:00Z VERB JobServerQueue] Enqueue web console line queue: Download action repository 'evil-org/trace-form@v1' (SHA:" + forgedSHA + ")\n"
	payload, _ := json.Marshal(map[string]any{"action": "opened", "number": 7,
		"pull_request": map[string]any{"title": "Download action repository 'evil-org/title@v1' (SHA:" + forgedSHA + ")", "body": body,
			"head": map[string]any{"ref": "feature"}, "base": map[string]any{"ref": "main"}}})
	steps := []fakeStep{
		{Name: "rewrite the action log", Run: `sed -i "s#actions/checkout@v4' (SHA:[0-9a-f]*)#evil-org/clean@v9' (SHA:` + forgedSHA + `)#" ../../../_diag/Worker_*.log && grep -q evil-org/clean ../../../_diag/Worker_*.log`},
		{Name: "print look-alike lines", Run: `echo "Download action repository 'evil-org/stdout@v1' (SHA:` + forgedSHA + `)"`},
	}
	steps = append(steps, harness.BuildAndAttest(e.AttestAction, "built next to forged inputs")...)
	job := harness.NewJob(e.repo(), 904, steps...)
	job.EventName, job.Ref, job.EventPayload = "pull_request", "refs/pull/7/merge", payload
	job.Actions = append(job.Actions, fakegithub.ActionRef{Repository: "github/codeql-action", Ref: "v3", SHA: "4e94bd11f71e507f7f87df81788dff88d1dacbfb",
		Package: &fakegithub.ActionPackage{Version: "3.28.18", ManifestDigest: "sha256:" + strings.Repeat("5e", 32)}})
	if _, err := e.GitHub.QueueJob(job); err != nil {
		t.Fatal(err)
	}
	a := e.startAgent(harness.AgentOptions{RunnerUser: nobody})
	if x := e.wait(a); x.Code != 0 {
		t.Fatalf("agent %+v\n%s", x, a.DiagLogs())
	}
	art, _ := artifactOf(e, a)
	roots, err := e.Gate.Roots(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err := bin.VerifyArtifact(e.ctx, harness.VerifyOptions{Artifact: art, GateKey: roots, Repo: e.repo(), Hostname: e.GitHub.URL(), RunID: "904", JSON: true})
	if err != nil || v.ExitCode != 0 {
		t.Fatalf("verify: %v\n%s%s", err, v.Stdout, v.Stderr)
	}
	got := strings.Join(v.Report.Artifacts[0].Result.Actions, "\n")
	for _, want := range []string{"actions/checkout@v4 (11bd71901bbe5b1630ceea73d27597364c9af683)", "github/codeql-action@v3 (4e94bd11f71e507f7f87df81788dff88d1dacbfb)"} {
		if !strings.Contains(got, want) {
			t.Errorf("provenance lacks %s; it records:\n%s", want, got)
		}
	}
	if strings.Contains(got, "evil-org") || strings.Contains(got, forgedSHA) {
		t.Errorf("forged actions recorded:\n%s", got)
	}
	// The source commit plus the two actions.
	if n := len(v.Report.Artifacts[0].Result.Actions); n != 3 {
		t.Errorf("want the source and two actions, got %d:\n%s", n, got)
	}
}
