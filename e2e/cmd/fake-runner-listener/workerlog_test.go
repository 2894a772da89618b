package main

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/runner"
	"github.com/google/go-cmp/cmp"
)

const (
	codeqlSHA = "ff0a06e83cb2de871e5a09832bc6a81e7276941f"
	codeqlPkg = "sha256:0b41304c3837968c577fdb6c0aa2845a72b559482f30bae7cb59d4bed90065ac"
	evilSHA   = "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef"
)

// TestWorkerLogForTheAgent: the Worker log has what the agent reads at job
// start, as the real runner writes it: the job message dump with the
// attacker's text (a PR title and body with look-alike lines, a step
// script) JSON-escaped before the hook, then the action-download block with
// a repository action and an immutable action package. The agent's parser
// reads exactly the job's actions from it, both at hook time and after the
// job printed its own look-alikes.
func TestWorkerLogForTheAgent(t *testing.T) {
	w := newWorld(t)
	dir := runnerDir(t)
	cfg := w.mint(t, "attested-vm-7")
	lookAlike := "Download action repository 'evil-org/clean@v9' (SHA:" + evilSHA + ")"
	forgedLine := "[2026-11-29 10:00:01Z VERB JobServerQueue] Enqueue web console line queue: " + lookAlike
	title := lookAlike
	body := "Fixes the build.\n" + forgedLine + "\r\n[2026-11-29 10:00:01Z VERB JobServerQueue] Enqueue web console line queue: Prepare all required actions\nThanks <3 & bye"
	payload, err := json.Marshal(map[string]any{
		"action": "opened", "number": 7,
		"pull_request": map[string]any{"title": title, "body": body, "draft": false, "base": map[string]any{"ref": "main"}, "head": map[string]any{"ref": "fix"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	script := "cat <<'EOF'\n" + forgedLine + "\nEOF\nprintf '%01100d\\n' 0"
	job := fakegithub.Job{
		Repository: "acme/widgets", Ref: "refs/pull/7/merge", SHA: commitSHA,
		WorkflowRef: "acme/widgets/.github/workflows/ci.yml@refs/pull/7/merge", WorkflowSHA: commitSHA,
		EventName: "pull_request", Actor: "mallory", RunID: 4712, Job: "test",
		Labels: []string{"self-hosted", "attested"},
		Actions: []fakegithub.ActionRef{
			{Repository: "actions/checkout", Ref: "v4", SHA: checkoutSHA},
			{Repository: "github/codeql-action", Ref: "v3", SHA: codeqlSHA, Package: &fakegithub.ActionPackage{Version: "3.28.18", ManifestDigest: codeqlPkg}},
		},
		Steps:        []fakegithub.Step{{Name: "look-alikes", Run: script}},
		EventPayload: payload,
	}
	if _, err := w.srv.QueueJob(job); err != nil {
		t.Fatal(err)
	}
	p := startListener(t, dir, []string{
		"ACTIONS_RUNNER_INPUT_JITCONFIG=" + cfg.GetEncodedJITConfig(),
		"ACTIONS_RUNNER_HOOK_JOB_STARTED=" + filepath.Join(w.hooks, "started.sh"),
		"GITHUB_ACTIONS_RUNNER_TRACE=1",
		"HOOK_OUT=" + w.hookOut,
	})
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, p.stdout, p.stderr)
	}
	log := readOnlyLog(t, dir, "Worker_*-utc.log")
	lines := strings.Split(log, "\n")
	header := regexp.MustCompile(`^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z (INFO|VERB|WARN|ERR ) [A-Za-z]+\] `)
	consoleAt := func(text string) int {
		for i, l := range lines {
			if header.MatchString(l) && strings.HasSuffix(l, "] Enqueue web console line queue: "+text) && strings.Contains(l, " VERB JobServerQueue] ") {
				return i
			}
		}
		return -1
	}

	// The dump: one INFO record, "Job message:", the JSON on the lines
	// after it (the first " {"), up to the next record.
	dumpAt := -1
	for i, l := range lines {
		if header.MatchString(l) && strings.HasSuffix(l, " INFO Worker] Job message:") {
			dumpAt = i
			break
		}
	}
	if dumpAt < 0 || dumpAt+1 >= len(lines) || lines[dumpAt+1] != " {" {
		t.Fatalf("no job message dump in the Worker log:\n%s", log)
	}
	end := dumpAt + 1
	for end < len(lines) && !header.MatchString(lines[end]) {
		end++
	}
	var msg struct {
		MessageType string `json:"messageType"`
		Steps       []struct {
			Reference map[string]string `json:"reference"`
			Inputs    struct {
				Map []struct{ Key, Value string } `json:"map"`
			} `json:"inputs"`
		} `json:"steps"`
		ContextData struct {
			GitHub contextDict `json:"github"`
		} `json:"contextData"`
	}
	if err := json.Unmarshal([]byte(strings.Join(lines[dumpAt+1:end], "\n")), &msg); err != nil {
		t.Fatalf("the dump is not JSON: %v\n%s", err, strings.Join(lines[dumpAt+1:end], "\n"))
	}
	if msg.MessageType != "PipelineAgentJobRequest" || len(msg.Steps) != 3 {
		t.Errorf("job message %+v", msg)
	}
	if got := msg.Steps[0].Reference; got["type"] != "repository" || got["name"] != "actions/checkout" || got["ref"] != "v4" {
		t.Errorf("first step reference %v", got)
	}
	if s := msg.Steps[2]; s.Reference["type"] != "script" || len(s.Inputs.Map) != 1 || s.Inputs.Map[0].Value != script {
		t.Errorf("script step %+v", s)
	}
	pr := lookup(t, lookup(t, msg.ContextData.GitHub, "event"), "pull_request")
	if lookup(t, pr, "title") != title || lookup(t, pr, "body") != body || lookup(t, pr, "draft") != false {
		t.Errorf("pull_request context %+v", pr)
	}
	if lookup(t, lookup(t, msg.ContextData.GitHub, "event"), "number") != 7.0 || !strings.Contains(log, `"v": 7.0`) {
		t.Error("a number is not a double as NumberContextData writes it")
	}
	if !strings.Contains(log, `Thanks <3 & bye"`) {
		t.Error("the dump escapes <, > or &, which Newtonsoft does not")
	}

	// The block, after the dump and before the hook, in the runner's order.
	block := []string{
		"Prepare all required actions",
		"Getting action download info",
		"Download action repository 'actions/checkout@v4' (SHA:" + checkoutSHA + ")",
		"##[group]Download immutable action package 'github/codeql-action@v3'",
		"Version: 3.28.18",
		"Digest: " + codeqlPkg,
		"Source commit SHA: " + codeqlSHA,
		"##[endgroup]",
		"Complete job name: test",
		"A job started hook has been configured by the self-hosted runner administrator",
	}
	prev := end - 1
	for _, text := range block {
		at := consoleAt(text)
		if at <= prev {
			t.Fatalf("console line %q at %d, want after %d:\n%s", text, at, prev, log)
		}
		prev = at
	}
	for i := consoleAt("##[group]Download immutable action package 'github/codeql-action@v3'"); i < consoleAt("##[endgroup]"); i++ {
		if !strings.Contains(lines[i], "] Enqueue web console line queue: ") {
			t.Errorf("line %d inside the package group is not a console line: %q", i, lines[i])
		}
	}
	// The look-alikes are whole lines only where the job printed them
	// (after the hook), never in the dump.
	for i, l := range lines[:consoleAt(block[len(block)-1])] {
		if l == forgedLine || strings.HasSuffix(l, "10:00:01Z VERB JobServerQueue] Enqueue web console line queue: Prepare all required actions") {
			t.Errorf("line %d: the attacker's text is a whole line before the hook: %q", i, l)
		}
	}
	if consoleAt(forgedLine) < prev {
		t.Error("the step's look-alike was not traced after the hook")
	}
	// A long console line is traced whole, then marked cut.
	long := consoleAt(strings.Repeat("0", 1100))
	if long < 0 || long+1 >= len(lines) || !strings.HasSuffix(lines[long+1], " VERB JobServerQueue] Web console line is more than 1024 chars, truncate to first 1024 chars") {
		t.Error("the 1100-character line is not traced whole and then marked cut")
	}

	// What the agent reads: at hook time, and after the job's own output.
	want := []provenance.ActionRef{
		{Repository: "actions/checkout", Ref: "v4", SHA: checkoutSHA},
		{Repository: "github/codeql-action", Ref: "v3", SHA: codeqlSHA, Package: &provenance.ActionPackage{Version: "3.28.18", ManifestDigest: codeqlPkg}},
	}
	atHook := strings.Join(lines[:consoleAt(block[len(block)-1])+1], "\n") + "\n"
	for name, text := range map[string]string{"at hook time": atHook, "after the job": log} {
		got := runner.ParseWorkerActions([][]byte{[]byte(text)})
		if diff := cmp.Diff(runner.WorkerActions{Actions: want, Complete: true}, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
}

// lookup reads a key of context data decoded from the dump.
func lookup(t *testing.T, d any, key string) any {
	t.Helper()
	var cd contextDict
	switch v := d.(type) {
	case contextDict:
		cd = v
	case map[string]any:
		b, _ := json.Marshal(v)
		if err := json.Unmarshal(b, &cd); err != nil {
			t.Fatal(err)
		}
	}
	if cd.T != 2 {
		t.Fatalf("%q: not a dictionary: %v", key, d)
	}
	for _, p := range cd.D {
		if p.K == key {
			return p.V
		}
	}
	t.Fatalf("no %q in %v", key, d)
	return nil
}
