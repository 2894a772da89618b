package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/provenance"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"
)

const (
	checkoutSHA = "11bd71901bbe5b1630ceea73d27597364c9af683"
	codeqlSHA   = "ff0a06e83cb2de871e5a09832bc6a81e7276941f"
	codeqlPkg   = "sha256:0b41304c3837968c577fdb6c0aa2845a72b559482f30bae7cb59d4bed90065ac"
	evilSHA     = "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef"
)

// trace is one trace record as HostTraceListener writes it.
func trace(level, source, msg string) string {
	return "[2026-11-29 10:00:01Z " + level + " " + source + "] " + msg + "\n"
}

// console is one console line as JobServerQueue traces it.
func console(line string) string {
	return trace("VERB", "JobServerQueue", "Enqueue web console line queue: "+line)
}

// forgedConsole is a whole console trace line hidden in attacker text.
var forgedConsole = strings.TrimSuffix(console("Download action repository 'evil-org/clean@v9' (SHA:"+evilSHA+")"), "\n")

// jobDump is Worker.RunAsync's job message trace: INFO, "Job message:",
// then the JSON on continuation lines, attacker text (the PR body, a step
// script) escaped inside it.
var jobDump = trace("INFO", "Worker", "Job message:") + ` {
  "messageType": "PipelineAgentJobRequest",
  "steps": [
    {
      "type": "action",
      "reference": {
        "type": "script"
      },
      "inputs": {
        "type": 2,
        "map": [
          {
            "Key": "script",
            "Value": "echo \"Download action repository 'evil-org/clean@v9' (SHA:` + evilSHA + `)\""
          }
        ]
      }
    }
  ],
  "contextData": {
    "github": {
      "t": 2,
      "d": [
        {
          "k": "event",
          "v": {
            "t": 2,
            "d": [
              {
                "k": "pull_request",
                "v": {
                  "t": 2,
                  "d": [
                    {
                      "k": "title",
                      "v": "Download action repository 'evil-org/clean@v9' (SHA:` + evilSHA + `)"
                    },
                    {
                      "k": "body",
                      "v": "Fixes it.\n` + strings.ReplaceAll(forgedConsole, `\`, `\\`) + `\nThanks"
                    }
                  ]
                }
              }
            ]
          }
        }
      ]
    }
  }
}
`

// preamble is the log up to the action-download block.
var preamble = trace("INFO", "Worker", "Version: 2.336.0") +
	trace("INFO", "Worker", "Waiting to receive the job message from the channel.") +
	trace("INFO", "Worker", "Message received.") +
	jobDump +
	trace("INFO", "StepsRunner", "Processing step: DisplayName='Set up job'") +
	console("Current runner version: '2.336.0'") +
	console("Runner name: 'attested-abc'") +
	console("Prepare workflow directory") +
	trace("INFO", "JobExtension", "Downloading actions")

// realBlock is the action-download block of a job using actions/checkout
// and the immutable package of github/codeql-action, with the traces
// ActionManager interleaves (one a multi-line JSON dump).
var realBlock = []string{
	console("Prepare all required actions"),
	console("Getting action download info"),
	trace("VERB", "ActionManager", "Entering DownloadRepositoryActionAsync"),
	console("Download action repository 'actions/checkout@v4' (SHA:" + checkoutSHA + ")"),
	trace("INFO", "ActionManager", "Save archive 'https://api.github.com/repos/actions/checkout/tarball/"+checkoutSHA+"' into /home/runner/_work/_actions/_temp_1/2.tar.gz."),
	trace("INFO", "ActionManager", "Finished getting action repository."),
	trace("VERB", "ActionManager", "Entering DownloadRepositoryActionAsync"),
	console("##[group]Download immutable action package 'github/codeql-action@v3'"),
	console("Version: 3.28.18"),
	console("Digest: " + codeqlPkg),
	console("Source commit SHA: " + codeqlSHA),
	console("##[endgroup]"),
	trace("VERB", "ActionManager", "Details: [") + "  {\n    \"run\": \"echo Download action repository 'evil-org/clean@v9' (SHA:" + evilSHA + ")\"\n  }\n]\n",
	console("Complete job name: build"),
}

// epilogue is the job-started hook's step, still running: its last line
// is being written.
var epilogue = trace("INFO", "StepsRunner", "Processing step: DisplayName='Set up runner'") +
	console("A job started hook has been configured by the self-hosted runner administrator") +
	console("##[group]Run '/run/attested-runner/hooks/job-started.sh'") +
	"[2026-11-29 10:00:02Z INFO JobServerQueue] Try to append 1 batches web console li"

var realActions = []provenance.ActionRef{
	{Repository: "actions/checkout", Ref: "v4", SHA: checkoutSHA},
	{Repository: "github/codeql-action", Ref: "v3", SHA: codeqlSHA, Package: &provenance.ActionPackage{Version: "3.28.18", ManifestDigest: codeqlPkg}},
}

func workerLog(block ...string) string { return preamble + strings.Join(block, "") + epilogue }

// edit returns realBlock with lines replaced: at index i, the lines given
// (none deletes it).
func edit(i int, lines ...string) []string {
	out := append([]string{}, realBlock[:i]...)
	out = append(out, lines...)
	return append(out, realBlock[i+1:]...)
}

func insert(i int, lines ...string) []string {
	out := append([]string{}, realBlock[:i]...)
	out = append(out, lines...)
	return append(out, realBlock[i:]...)
}

func TestParseWorkerActions(t *testing.T) {
	terminator := len(realBlock) - 1
	dl := func(repo, ref, sha string) string {
		return console("Download action repository '" + repo + "@" + ref + "' (SHA:" + sha + ")")
	}
	for _, tc := range []struct {
		name    string
		logs    []string
		want    []provenance.ActionRef
		wantErr error
	}{
		{name: "real format", logs: []string{workerLog(realBlock...)}, want: realActions},
		{name: "no actions", logs: []string{workerLog(console("Prepare all required actions"), console("Complete job name: build"))}},
		{name: "rotated into two files", logs: []string{preamble + strings.Join(realBlock[:5], ""), strings.Join(realBlock[5:], "") + epilogue}, want: realActions},
		{name: "download before the block ignored", logs: []string{workerLog(append([]string{dl("evil-org/clean", "v9", evilSHA)}, realBlock...)...)}, want: realActions},
		{name: "debug lines", logs: []string{workerLog(insert(1, console("##[debug]Resolving $/x → o/r/x@main"), console("##[debug]Download 'u' to 'f'"))...)}, want: realActions},
		{name: "resolution retried", logs: []string{workerLog(insert(2, console("Failed to resolve action download info. Error: 502 Bad Gateway"), console("Retrying in 17.2 seconds"), console("Getting action download info"))...)}, want: realActions},
		{name: "same download twice", logs: []string{workerLog(insert(4, dl("actions/checkout", "v4", checkoutSHA))...)}, want: realActions},
		{name: "ends with Uses", logs: []string{workerLog(edit(terminator, console("Uses: octo-org/app/.github/workflows/release.yml@refs/heads/main"))...)}, want: realActions},
		{name: "ends with the hook", logs: []string{preamble + strings.Join(realBlock[:terminator], "") + epilogue}, want: realActions},
		{name: "after the block ignored", logs: []string{workerLog(append(append([]string{}, realBlock...), console("  version: 1.2"), console("Version: 9"))...)}, want: realActions},

		{name: "no block", logs: []string{workerLog(realBlock[1:]...)}, wantErr: errNoBlock},
		{name: "no Worker log content", logs: []string{""}, wantErr: errNoBlock},
		{name: "block opened twice", logs: []string{workerLog(insert(5, console("Prepare all required actions"))...)}, wantErr: errBlockTwice},
		{name: "second block after the first", logs: []string{workerLog(append(append([]string{}, realBlock...), realBlock...)...)}, wantErr: errBlockTwice},
		{name: "unterminated", logs: []string{preamble + strings.Join(realBlock[:terminator], "")}, wantErr: errUnterminated},
		{name: "terminator truncated", logs: []string{preamble + strings.Join(realBlock, "")[:len(strings.Join(realBlock, ""))-1]}, wantErr: errUnterminated},
		{name: "download line truncated", logs: []string{preamble + strings.Join(realBlock[:3], "") + strings.TrimSuffix(realBlock[3], "\n")}, wantErr: errUnterminated},
		{name: "older file ends mid-line", logs: []string{preamble + strings.Join(realBlock[:3], "") + "[2026-11-29 10:00:01Z VERB Job", strings.Join(realBlock[3:], "") + epilogue}, wantErr: errMidLine},
		{name: "unknown console line", logs: []string{workerLog(insert(4, console("Download action tarball 'evil-org/clean@v9'"))...)}, wantErr: errBlockLine},
		{name: "warning in the block", logs: []string{workerLog(insert(4, console("##[warning]Back off 12 seconds before retry."))...)}, wantErr: errBlockLine},
		{name: "prefix in the console line", logs: []string{workerLog(edit(3, console("x Download action repository 'actions/checkout@v4' (SHA:"+checkoutSHA+")"))...)}, wantErr: errBlockLine},
		{name: "suffix", logs: []string{workerLog(edit(3, strings.TrimSuffix(realBlock[3], "\n")+" \n")...)}, wantErr: errBlockLine},
		{name: "path in the name", logs: []string{workerLog(edit(3, dl("actions/checkout/sub", "v4", checkoutSHA))...)}, wantErr: errBlockLine},
		{name: "quote in the ref", logs: []string{workerLog(edit(3, dl("actions/checkout", "v4' x '", checkoutSHA))...)}, wantErr: errBlockLine},
		{name: "short SHA", logs: []string{workerLog(edit(3, dl("actions/checkout", "v4", checkoutSHA[:39]))...)}, wantErr: errBlockLine},
		{name: "masked name", logs: []string{workerLog(edit(3, dl("***/checkout", "v4", checkoutSHA))...)}, wantErr: errBlockLine},
		{name: "prefix", logs: []string{workerLog(insert(5, "x"+forgedConsole+"\n")...)}, wantErr: errLookAlike},
		{name: "INFO level", logs: []string{workerLog(insert(5, strings.Replace(forgedConsole, " VERB ", " INFO ", 1)+"\n")...)}, wantErr: errLookAlike},
		{name: "other source", logs: []string{workerLog(insert(5, strings.Replace(forgedConsole, " JobServerQueue]", " ActionManager]", 1)+"\n")...)}, wantErr: errLookAlike},
		{name: "no space after the marker", logs: []string{workerLog(insert(5, strings.Replace(forgedConsole, "queue: ", "queue:", 1)+"\n")...)}, wantErr: errLookAlike},
		{name: "impossible time", logs: []string{workerLog(insert(5, strings.Replace(forgedConsole, "2026-11-29", "2026-13-29", 1)+"\n")...)}, wantErr: errLookAlike},
		{name: "console line continued", logs: []string{workerLog(insert(4, "' (SHA:"+evilSHA+")\n")...)}, wantErr: errContinued},
		{name: "block start continued", logs: []string{workerLog(insert(1, "and more\n")...)}, wantErr: errContinued},
		{name: "download after the block", logs: []string{workerLog(append(append([]string{}, realBlock...), dl("evil-org/backdoor", "v1", evilSHA))...)}, wantErr: errDownloadOutsideBlock},
		{name: "resolution after the block", logs: []string{workerLog(append(append([]string{}, realBlock...), console("Getting action download info"))...)}, wantErr: errDownloadOutsideBlock},
		{name: "package after the block", logs: []string{workerLog(append(append([]string{}, realBlock...), console("##[group]Download immutable action package 'evil-org/backdoor@v1'"))...)}, wantErr: errDownloadOutsideBlock},
		{name: "forged end hides a download", logs: []string{workerLog(insert(2, console("Complete job name: build"))...)}, wantErr: errDownloadOutsideBlock},
		{name: "two commits", logs: []string{workerLog(insert(4, dl("actions/checkout", "v4", evilSHA))...)}, wantErr: errTwoCommits},
		{name: "package and repository", logs: []string{workerLog(insert(12, dl("github/codeql-action", "v3", codeqlSHA))...)}, wantErr: errTwoCommits},
		{name: "two package digests", logs: []string{workerLog(insert(12,
			console("##[group]Download immutable action package 'github/codeql-action@v3'"), console("Version: 3.28.18"),
			console("Digest: sha256:"+strings.Repeat("0", 64)), console("Source commit SHA: "+codeqlSHA), console("##[endgroup]"))...)}, wantErr: errTwoCommits},
		{name: "same package twice", logs: []string{workerLog(insert(12, realBlock[7:12]...)...)}, want: realActions},
		{name: "package without digest", logs: []string{workerLog(edit(9)...)}, wantErr: errBlockLine},
		{name: "package lines out of order", logs: []string{workerLog(append(append(append([]string{}, realBlock[:8]...), realBlock[9], realBlock[8]), realBlock[10:]...)...)}, wantErr: errBlockLine},
		{name: "package version not understood", logs: []string{workerLog(edit(8, console("Version: 3.28.18 (latest)"))...)}, wantErr: errBlockLine},
		{name: "package header with suffix", logs: []string{workerLog(edit(7, console("##[group]Download immutable action package 'github/codeql-action@v3' "))...)}, wantErr: errBlockLine},
		{name: "package digest not understood", logs: []string{workerLog(edit(9, console("Digest: sha512:"+strings.Repeat("0", 64)))...)}, wantErr: errBlockLine},
		{name: "package SHA not understood", logs: []string{workerLog(edit(10, console("Source commit SHA: "+codeqlSHA[:12]))...)}, wantErr: errBlockLine},
		{name: "package not closed", logs: []string{workerLog(edit(11)...)}, wantErr: errBlockLine},
		{name: "package not closed at the end", logs: []string{preamble + strings.Join(realBlock[:11], "")}, wantErr: errUnterminated},
		{name: "download inside a package group", logs: []string{workerLog(edit(11, dl("evil-org/clean", "v9", evilSHA))...)}, wantErr: errBlockLine},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := make([][]byte, len(tc.logs))
			for i, l := range tc.logs {
				logs[i] = []byte(l)
			}
			got, err := parseWorkerLogs(logs)
			if diff := cmp.Diff(tc.wantErr, err, cmpopts.EquateErrors()); diff != "" {
				t.Fatalf("error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
			wa := ParseWorkerActions(logs)
			if wa.Complete != (tc.wantErr == nil) || (wa.Reason == "") != wa.Complete || (!wa.Complete && wa.Actions != nil) {
				t.Errorf("ParseWorkerActions %+v", wa)
			}
		})
	}
}

// TestParseWorkerActionsQueueLimit: 1024 console lines before the block's
// end may mean JobServerQueue dropped one, untraced.
func TestParseWorkerActionsQueueLimit(t *testing.T) {
	base := strings.Count(preamble+strings.Join(realBlock, ""), "\n[2026-11-29 10:00:01Z VERB JobServerQueue] Enqueue web console line queue: ")
	for _, tc := range []struct {
		total   int
		wantErr error
	}{
		{webConsoleQueueLimit - 1, nil},
		{webConsoleQueueLimit, errConsoleQueueFull},
	} {
		block := insert(1, strings.Repeat(console("##[debug]Loaded action.yml file: {"), tc.total-base))
		_, err := parseWorkerLogs([][]byte{[]byte(workerLog(block...))})
		if diff := cmp.Diff(tc.wantErr, err, cmpopts.EquateErrors()); diff != "" {
			t.Errorf("%d console lines: (-want +got):\n%s", tc.total, diff)
		}
	}
}

func TestParseWorkerActionsReason(t *testing.T) {
	wa := ParseWorkerActions([][]byte{[]byte(workerLog(insert(4, console("Download action tarball 'evil-org/clean@v9'"))...))})
	want := fmt.Sprintf("Worker log 1 line %d: %v: %q", strings.Count(preamble, "\n")+5, errBlockLine, "Download action tarball 'evil-org/clean@v9'")
	if wa.Complete || wa.Reason != want || wa.Actions != nil {
		t.Errorf("got %+v\nwant reason %q", wa, want)
	}
}

// diagFixture writes Worker logs into a fresh _diag and returns its path.
func diagFixture(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "_diag")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const (
	workerLog1 = "Worker_20261129-100000-utc.log"
	workerLog2 = "Worker_20261129-100005-utc.log"
)

func TestReadWorkerActions(t *testing.T) {
	uid := os.Getuid()
	full := workerLog(realBlock...)
	split := len(preamble) + len(realBlock[0]) + len(realBlock[1])

	t.Run("rotated logs in name order", func(t *testing.T) {
		// Five files cut at record boundaries, created newest first:
		// the names, not the directory order, decide.
		dir := diagFixture(t, map[string]string{"Runner_20261129-095900-utc.log": "x", "Worker_20261129-100005-utc.log.gz": "x"})
		cuts := []int{0, len(preamble) / 2, len(preamble), split, split + len(realBlock[2]), len(full)}
		for len(full) > 0 && full[cuts[1]-1] != '\n' {
			cuts[1]++
		}
		for i := len(cuts) - 2; i >= 0; i-- {
			name := fmt.Sprintf("Worker_20261129-10000%d-utc.log", i)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(full[cuts[i]:cuts[i+1]]), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		wa := ReadWorkerActions(dir, uid)
		if diff := cmp.Diff(WorkerActions{Actions: realActions, Complete: true}, wa); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})

	t.Run("rewritten after reading", func(t *testing.T) {
		// Attack (a): the job rewrites the log with sed once it runs.
		dir := diagFixture(t, map[string]string{workerLog1: full})
		wa := ReadWorkerActions(dir, uid)
		forged := strings.ReplaceAll(full, "actions/checkout@v4' (SHA:"+checkoutSHA, "evil-org/clean@v9' (SHA:"+evilSHA)
		if err := os.WriteFile(filepath.Join(dir, workerLog1), []byte(forged), 0o644); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(WorkerActions{Actions: realActions, Complete: true}, wa); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		if again := ReadWorkerActions(dir, uid); again.Actions == nil || again.Actions[0].Repository != "evil-org/clean" {
			t.Fatalf("the rewrite did not take: %+v", again)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			setup   func(t *testing.T) (dir string, runnerUID int)
			limit   int64
			wantErr error
		}{
			{name: "symlinked Worker log", wantErr: unix.ELOOP, setup: func(t *testing.T) (string, int) {
				dir := diagFixture(t, nil)
				real := filepath.Join(t.TempDir(), "real.log")
				os.WriteFile(real, []byte(full), 0o644)
				mustSymlink(t, real, filepath.Join(dir, workerLog1))
				return dir, uid
			}},
			// open(O_DIRECTORY|O_NOFOLLOW) of a symlink fails ENOTDIR.
			{name: "symlinked _diag", wantErr: unix.ENOTDIR, setup: func(t *testing.T) (string, int) {
				real := diagFixture(t, map[string]string{workerLog1: full})
				link := filepath.Join(t.TempDir(), "_diag")
				mustSymlink(t, real, link)
				return link, uid
			}},
			{name: "_diag not a directory", wantErr: unix.ENOTDIR, setup: func(t *testing.T) (string, int) {
				p := filepath.Join(t.TempDir(), "_diag")
				os.WriteFile(p, []byte(full), 0o644)
				return p, uid
			}},
			{name: "_diag a FIFO", wantErr: unix.ENOTDIR, setup: func(t *testing.T) (string, int) {
				// Without O_DIRECTORY the open would block.
				p := filepath.Join(t.TempDir(), "_diag")
				if err := unix.Mkfifo(p, 0o644); err != nil {
					t.Fatal(err)
				}
				return p, uid
			}},
			{name: "no _diag", wantErr: unix.ENOENT, setup: func(t *testing.T) (string, int) {
				return filepath.Join(t.TempDir(), "_diag"), uid
			}},
			{name: "no Worker log", wantErr: errNoWorkerLog, setup: func(t *testing.T) (string, int) {
				return diagFixture(t, map[string]string{"Runner_20261129-095900-utc.log": full}), uid
			}},
			{name: "name the runner does not write", wantErr: errWorkerLogName, setup: func(t *testing.T) (string, int) {
				return diagFixture(t, map[string]string{workerLog1: full, "Worker_evil.log": ""}), uid
			}},
			{name: "directory", wantErr: errNotRegular, setup: func(t *testing.T) (string, int) {
				dir := diagFixture(t, nil)
				os.Mkdir(filepath.Join(dir, workerLog1), 0o755)
				return dir, uid
			}},
			{name: "oversized", limit: int64(len(full)) - 1, wantErr: errTooLarge, setup: func(t *testing.T) (string, int) {
				return diagFixture(t, map[string]string{workerLog1: full}), uid
			}},
			{name: "oversized in all", limit: int64(len(full)) - 1, wantErr: errTooLarge, setup: func(t *testing.T) (string, int) {
				// Each file is under the limit; together they are over it.
				return diagFixture(t, map[string]string{workerLog1: full[:split], workerLog2: full[split:]}), uid
			}},
			{name: "_diag of another user", wantErr: errDirOwner, setup: func(t *testing.T) (string, int) {
				dir := diagFixture(t, map[string]string{workerLog1: full})
				if uid == 0 {
					mustChown(t, dir, 4243)
				}
				return dir, 4242
			}},
			{name: "Worker log of another user", wantErr: errOwner, setup: func(t *testing.T) (string, int) {
				if uid != 0 {
					t.Skip("needs root to give a file away")
				}
				dir := diagFixture(t, map[string]string{workerLog1: full})
				mustChown(t, dir, 4242)
				return dir, 4242 // the file stays root's
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				dir, runnerUID := tc.setup(t)
				limit := tc.limit
				if limit == 0 {
					limit = maxDiagRead
				}
				logs, err := readWithin(t, dir, runnerUID, limit)
				if !errors.Is(err, tc.wantErr) || logs != nil {
					t.Fatalf("got %v (%d logs), want %v", err, len(logs), tc.wantErr)
				}
				if tc.limit == 0 {
					if wa := ReadWorkerActions(dir, runnerUID); wa.Complete || wa.Actions != nil || wa.Reason == "" {
						t.Errorf("ReadWorkerActions %+v", wa)
					}
				}
			})
		}
	})

	t.Run("root-owned _diag", func(t *testing.T) {
		if uid != 0 {
			t.Skip("needs root")
		}
		dir := diagFixture(t, map[string]string{workerLog1: full})
		mustChown(t, filepath.Join(dir, workerLog1), 4242)
		if wa := ReadWorkerActions(dir, 4242); !wa.Complete {
			t.Fatalf("%+v", wa)
		}
	})

	t.Run("FIFO refused without hanging", func(t *testing.T) {
		dir := diagFixture(t, map[string]string{workerLog1: full})
		if err := unix.Mkfifo(filepath.Join(dir, workerLog2), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := readWithin(t, dir, uid, maxDiagRead); !errors.Is(err, errNotRegular) {
			t.Fatalf("got %v, want %v", err, errNotRegular)
		}
	})
}

// readWithin is readWorkerLogs, failing the test if it blocks (on a FIFO).
func readWithin(t *testing.T, dir string, runnerUID int, limit int64) ([][]byte, error) {
	t.Helper()
	type result struct {
		logs [][]byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		_, logs, err := readWorkerLogs(dir, runnerUID, limit)
		done <- result{logs, err}
	}()
	select {
	case r := <-done:
		return r.logs, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("reading the Worker logs blocks")
		return nil, nil
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func mustChown(t *testing.T, path string, uid int) {
	t.Helper()
	if err := os.Chown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
}
