package runner

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/attested-runner/attested-runner/provenance"
	"golang.org/x/sys/unix"
)

// The runner's Worker log, as far as the agent reads it (actions/runner,
// checked against the v2.336.0 source):
//
//   - Runner.Common/HostTraceListener.cs writes each trace record as
//     "[<UTC time, .NET "u" format> <level> <source>] <message>\n" (level
//     CRIT, "ERR ", WARN, INFO or VERB; source the service's type name, see
//     RunnerService.TraceName). A message with newlines continues on lines
//     without a header. Files are _diag/Worker_<yyyyMMdd-HHmmss>-utc.log, a
//     new one every 8 MB, always cut after a whole record.
//   - Runner.Common/JobServerQueue.cs QueueWebConsoleLine traces every
//     console line of every step, before queueing it, as
//     "[...] VERB JobServerQueue] Enqueue web console line queue: <line>"
//     (a Verbose trace: only with GITHUB_ACTIONS_RUNNER_TRACE, which the
//     agent sets). When 1024 lines are already queued the line is dropped,
//     untraced.
//   - Runner.Worker/Worker.cs RunAsync traces the whole job message at INFO
//     first ("Job message:" and indented JSON): step scripts and the event
//     payload (a pull request's title and body), attacker text, JSON-escaped
//     on continuation lines.
//   - Runner.Worker/JobExtension.cs InitializeJob ("Set up job") calls
//     ActionManager.PrepareActionsAsync, whose console lines are the
//     action-download block read here, then writes "Uses: ..." (when the
//     job comes from a reusable workflow) and "Complete job name: ...". The
//     job-started hook is the next step; Runner.Worker/JobHookProvider.cs
//     RunHook opens it with "A job started hook has been configured by the
//     self-hosted runner administrator". The agent reads the log while that
//     hook runs, before any step of the job.
//
// Console lines of the action-download block (Runner.Worker/ActionManager.cs):
//
//	Prepare all required actions                          PrepareActionsAsync
//	Getting action download info                          GetDownloadInfoAsync
//	Failed to resolve action download info. Error: <msg>  GetDownloadInfoAsync (retry)
//	Retrying in <n> seconds                               GetDownloadInfoAsync (retry)
//	Download action repository '<owner/repo>@<ref>' (SHA:<sha>)   DownloadRepositoryActionAsync
//	##[group]Download immutable action package '<owner/repo>@<ref>'   (PackageDetails set)
//	Version: <version>
//	Digest: <manifest digest>
//	Source commit SHA: <sha>
//	##[endgroup]
//	##[debug]<text>                     with ACTIONS_STEP_DEBUG (ExecutionContext.Debug)

// WorkerActions is what the runner's Worker log said about the job's actions, read at job start.
type WorkerActions struct {
	// Actions are the actions downloaded, in order of first download, each
	// once. Nil unless Complete: a partial list is never returned.
	Actions  []provenance.ActionRef
	Complete bool   // true only when the action-download block was found and every line in it was understood
	Reason   string // why not complete, for the agent's log
}

// maxDiagRead bounds how much of the runner's Worker logs is read, over all
// files: at job start they hold the job message and "Set up job", far less.
const maxDiagRead = 16 << 20

// webConsoleQueueLimit is JobServerQueue's _webConsoleLineQueueSizeLimit.
// A line is dropped (and not traced) only while that many are queued, so
// fewer traced lines than this up to the end of the block prove none of
// the block's lines was dropped.
const webConsoleQueueLimit = 1024

// Console lines and trace text the parser knows (see above).
const (
	consoleMarker  = "Enqueue web console line queue:"
	consolePrefix  = consoleMarker + " "
	blockStart     = "Prepare all required actions"
	resolvingLine  = "Getting action download info"
	hookStartedEnd = "A job started hook has been configured by the self-hosted runner administrator"
	debugTag       = "##[debug]"
	endGroup       = "##[endgroup]"
	traceTimeForm  = "2006-01-02 15:04:05Z" // .NET "u"
)

// actionPat is owner/repo@ref as ActionManager prints it: NameWithOwner (a
// path inside the repository is not part of it) and the ref the workflow
// wrote. Names outside GitHub's character set, and refs with quotes,
// spaces or '@', are not understood rather than guessed at.
const actionPat = `'([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)@([A-Za-z0-9_./+-]+)'`

var (
	traceHeader      = regexp.MustCompile(`^\[(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z) (CRIT|ERR |WARN|INFO|VERB) ([A-Za-z0-9_.]+)\] `)
	downloadLine     = regexp.MustCompile(`^Download action repository ` + actionPat + ` \(SHA:([0-9a-f]{40})\)$`)
	immutableHeader  = regexp.MustCompile(`^##\[group\]Download immutable action package ` + actionPat + `$`)
	immutableVersion = regexp.MustCompile(`^Version: ([0-9A-Za-z.+-]+)$`)
	immutableDigest  = regexp.MustCompile(`^Digest: (sha256:[0-9a-f]{64})$`)
	immutableSHA     = regexp.MustCompile(`^Source commit SHA: ([0-9a-f]{40})$`)
	resolveRetry     = regexp.MustCompile(`^(Failed to resolve action download info\. Error: .+|Retrying in [0-9.]+ seconds)$`)
	workerLogName    = regexp.MustCompile(`^Worker_\d{8}-\d{6}-utc\.log$`)
)

// Why a Worker log's actions are not complete.
var (
	errNoWorkerLog          = errors.New("no Worker log")
	errWorkerLogName        = errors.New("a Worker log name the runner does not write")
	errNotRegular           = errors.New("not a regular file")
	errOwner                = errors.New("not owned by the runner user")
	errDirOwner             = errors.New("owned by neither the runner user nor root")
	errTooLarge             = errors.New("the Worker logs are too large")
	errMidLine              = errors.New("a Worker log that is not the newest ends mid-line")
	errNoBlock              = errors.New("no action-download block")
	errBlockTwice           = errors.New("a second action-download block")
	errUnterminated         = errors.New("the action-download block does not end")
	errBlockLine            = errors.New("a console line in the action-download block is not understood")
	errContinued            = errors.New("a console line in the action-download block continues on the next line")
	errLookAlike            = errors.New("a line in the action-download block imitates a console line")
	errDownloadOutsideBlock = errors.New("an action download after the action-download block ended")
	errTwoCommits           = errors.New("one action resolved to two different downloads")
	errConsoleQueueFull     = fmt.Errorf("%d or more console lines before the action-download block ended: the runner may have dropped some", webConsoleQueueLimit)
)

// workerLogError places a parse failure in the logs.
type workerLogError struct {
	file int    // index in the logs
	name string // file name, when known
	line int    // 1-based
	text string // the console line, if any
	err  error
}

func (e *workerLogError) Error() string {
	where := fmt.Sprintf("Worker log %d", e.file+1)
	if e.name != "" {
		where = e.name
	}
	if e.line > 0 {
		where += fmt.Sprintf(" line %d", e.line)
	}
	s := where + ": " + e.err.Error()
	if e.text != "" {
		t := e.text
		if len(t) > 120 {
			t = t[:120] + "..."
		}
		s += fmt.Sprintf(": %q", t)
	}
	return s
}

func (e *workerLogError) Unwrap() error { return e.err }

// ReadWorkerActions reads the runner's Worker logs in diagDir (as root, in
// a directory the runner user owns) into memory and parses them with
// ParseWorkerActions. Call it while the job-started hook runs: before it
// the actions are not all downloaded, after it the job owns the files.
//
// It refuses (Complete false): a diagDir that is a symlink, not a
// directory, or owned by neither the runner user nor root; a Worker_*.log
// whose name the runner would not write, that is a symlink, is not a
// regular file (a FIFO is opened non-blocking and refused, never read), or
// is not owned by the runner user; more than maxDiagRead bytes in all.
// Files are read in name order (the names carry their creation time).
func ReadWorkerActions(diagDir string, runnerUID int) WorkerActions {
	names, logs, err := readWorkerLogs(diagDir, runnerUID, maxDiagRead)
	if err != nil {
		return WorkerActions{Reason: "reading the runner's Worker logs: " + err.Error()}
	}
	return parseWorkerActions(logs, names)
}

// ParseWorkerActions parses the runner's Worker logs (each file's content,
// in name order) for the actions "Set up job" downloaded. It accepts only
// whole lines of the form JobServerQueue traces, only inside the
// action-download block (see the top of this file), and reports the list
// complete only when:
//
//   - exactly one block opens ("Prepare all required actions") and it ends
//     ("Uses: ...", "Complete job name: ..." or the job-started hook's first
//     line);
//   - every console line in it has a known form, none continues on the
//     next line, and no other line in it imitates a console line;
//   - immutable action packages have all their lines, in order;
//   - no action resolves to two different downloads;
//   - no download line comes after the block ended (a forged end would
//     otherwise hide the downloads after it);
//   - fewer than 1024 console lines were traced before the block ended, so
//     the runner's console queue cannot have dropped one;
//   - every file but the last ends with a whole line (the last one's
//     partial line, still being written, is ignored).
//
// Lines before the block (such as the job message dump) are ignored.
//
// What it cannot tell: a trace message with attacker text containing a
// newline (an action's name in its action.yml, traced while the block
// runs) can add a whole forged line to the block. Such a line can add an
// action that was not downloaded, or make the list incomplete; with the
// checks above it cannot remove or replace one that was.
func ParseWorkerActions(logs [][]byte) WorkerActions {
	return parseWorkerActions(logs, nil)
}

func parseWorkerActions(logs [][]byte, names []string) WorkerActions {
	actions, err := parseWorkerLogs(logs)
	if err != nil {
		var le *workerLogError
		if errors.As(err, &le) && le.file < len(names) {
			le.name = names[le.file]
		}
		return WorkerActions{Reason: err.Error()}
	}
	return WorkerActions{Actions: actions, Complete: true}
}

type blockState int

const (
	beforeBlock blockState = iota
	inBlock
	afterBlock
)

// workerLogParser is the state of one parse.
type workerLogParser struct {
	state       blockState
	prevConsole bool // the record the current line belongs to is a console line
	console     int  // console lines traced so far, up to the block's end
	// pkg is the immutable package being read, step how many of its lines.
	pkg     *provenance.ActionRef
	step    int
	actions []provenance.ActionRef
	seen    map[string]provenance.ActionRef // by owner/repo@ref
}

func parseWorkerLogs(logs [][]byte) ([]provenance.ActionRef, error) {
	p := &workerLogParser{seen: map[string]provenance.ActionRef{}}
	for i, data := range logs {
		last := i == len(logs)-1
		if !last && len(data) > 0 && data[len(data)-1] != '\n' {
			return nil, &workerLogError{file: i, err: errMidLine}
		}
		for n := 1; len(data) > 0; n++ {
			j := bytes.IndexByte(data, '\n')
			if j < 0 {
				break // the newest file's last line, still being written
			}
			line := data[:j]
			data = data[j+1:]
			if err := p.line(line); err != nil {
				var le *workerLogError
				if errors.As(err, &le) {
					le.file, le.line = i, n
					return nil, le
				}
				return nil, &workerLogError{file: i, line: n, err: err}
			}
		}
	}
	switch {
	case p.state == beforeBlock:
		return nil, errNoBlock
	case p.state == inBlock:
		return nil, errUnterminated
	}
	return p.actions, nil
}

// consoleText returns the console line a whole trace line carries, or
// ok false when the line is not exactly a JobServerQueue console trace.
// header reports whether the line starts a trace record at all.
func consoleText(line []byte) (text string, ok, header bool) {
	if len(line) == 0 || line[0] != '[' {
		return "", false, false
	}
	m := traceHeader.FindSubmatchIndex(line)
	if m == nil {
		return "", false, false
	}
	if _, err := time.Parse(traceTimeForm, string(line[m[2]:m[3]])); err != nil {
		return "", false, false
	}
	level, source, msg := string(line[m[4]:m[5]]), string(line[m[6]:m[7]]), line[m[1]:]
	if level != "VERB" || source != "JobServerQueue" || !bytes.HasPrefix(msg, []byte(consolePrefix)) {
		return "", false, true
	}
	return string(msg[len(consolePrefix):]), true, true
}

func (p *workerLogParser) line(line []byte) error {
	text, console, header := consoleText(line)
	if header {
		p.prevConsole = console
	}
	if p.state == inBlock && !console {
		if !header && p.prevConsole {
			return errContinued
		}
		if bytes.Contains(line, []byte(consoleMarker)) {
			return &workerLogError{err: errLookAlike, text: string(line)}
		}
		return nil
	}
	if !console {
		return nil
	}
	if p.state != afterBlock {
		p.console++
	}
	switch p.state {
	case beforeBlock:
		if text == blockStart {
			p.state = inBlock
		}
		return nil
	case afterBlock:
		switch {
		case text == blockStart:
			return errBlockTwice
		case text == resolvingLine, strings.HasPrefix(text, "Download action repository "),
			strings.HasPrefix(text, "##[group]Download immutable action package "):
			return &workerLogError{err: errDownloadOutsideBlock, text: text}
		}
		return nil
	}
	if p.pkg != nil {
		return p.packageLine(text)
	}
	switch {
	case text == blockStart:
		return errBlockTwice
	case text == resolvingLine, strings.HasPrefix(text, debugTag), resolveRetry.MatchString(text):
		return nil
	case text == hookStartedEnd, strings.HasPrefix(text, "Complete job name: "), strings.HasPrefix(text, "Uses: "):
		if p.console >= webConsoleQueueLimit {
			return errConsoleQueueFull
		}
		p.state = afterBlock
		return nil
	}
	if m := downloadLine.FindStringSubmatch(text); m != nil {
		return p.add(provenance.ActionRef{Repository: m[1], Ref: m[2], SHA: m[3]}, text)
	}
	if m := immutableHeader.FindStringSubmatch(text); m != nil {
		p.pkg, p.step = &provenance.ActionRef{Repository: m[1], Ref: m[2], Package: &provenance.ActionPackage{}}, 0
		return nil
	}
	return &workerLogError{err: errBlockLine, text: text}
}

// packageLine reads the lines after "##[group]Download immutable action
// package": Version, Digest, Source commit SHA, ##[endgroup], in that
// order, nothing else.
func (p *workerLogParser) packageLine(text string) error {
	var m []string
	switch p.step {
	case 0:
		if m = immutableVersion.FindStringSubmatch(text); m != nil {
			p.pkg.Package.Version = m[1]
		}
	case 1:
		if m = immutableDigest.FindStringSubmatch(text); m != nil {
			p.pkg.Package.ManifestDigest = m[1]
		}
	case 2:
		if m = immutableSHA.FindStringSubmatch(text); m != nil {
			p.pkg.SHA = m[1]
		}
	case 3:
		if text == endGroup {
			a := *p.pkg
			p.pkg = nil
			return p.add(a, text)
		}
	}
	if m == nil {
		return &workerLogError{err: errBlockLine, text: text}
	}
	p.step++
	return nil
}

// add records a download once; the same owner/repo@ref downloaded
// differently (another commit, or once as a package) is ambiguous.
func (p *workerLogParser) add(a provenance.ActionRef, text string) error {
	key := a.Repository + "@" + a.Ref
	if prev, ok := p.seen[key]; ok {
		if prev.SHA != a.SHA || (prev.Package == nil) != (a.Package == nil) ||
			(prev.Package != nil && *prev.Package != *a.Package) {
			return &workerLogError{err: errTwoCommits, text: text}
		}
		return nil
	}
	p.seen[key] = a
	p.actions = append(p.actions, a)
	return nil
}

// readWorkerLogs reads every Worker log in diagDir, in name order, at most
// limit bytes in all, refusing what the runner would not have written (see
// ReadWorkerActions).
func readWorkerLogs(diagDir string, runnerUID int, limit int64) ([]string, [][]byte, error) {
	dfd, err := unix.Open(diagDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening %s: %w", diagDir, err)
	}
	dir := os.NewFile(uintptr(dfd), diagDir)
	defer dir.Close()
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", diagDir, err)
	}
	if int(st.Uid) != runnerUID && st.Uid != 0 {
		return nil, nil, fmt.Errorf("%s: %w (owner uid %d)", diagDir, errDirOwner, st.Uid)
	}
	all, err := dir.Readdirnames(-1)
	if err != nil {
		return nil, nil, fmt.Errorf("listing %s: %w", diagDir, err)
	}
	var names []string
	for _, n := range all {
		if !strings.HasPrefix(n, "Worker_") || !strings.HasSuffix(n, ".log") {
			continue
		}
		if !workerLogName.MatchString(n) {
			return nil, nil, fmt.Errorf("%q: %w", n, errWorkerLogName)
		}
		names = append(names, n)
	}
	if len(names) == 0 {
		return nil, nil, fmt.Errorf("%s: %w", diagDir, errNoWorkerLog)
	}
	sort.Strings(names)
	budget := limit
	logs := make([][]byte, 0, len(names))
	for _, n := range names {
		b, err := readWorkerLog(dfd, n, runnerUID, budget)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", n, err)
		}
		budget -= int64(len(b))
		logs = append(logs, b)
	}
	return names, logs, nil
}

// readWorkerLog reads one file of dirfd, never following a symlink and
// never blocking on a FIFO, at most limit bytes.
func readWorkerLog(dirfd int, name string, runnerUID int, limit int64) ([]byte, error) {
	fd, err := unix.Openat2(dirfd, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_BENEATH,
	})
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("%w (mode %#o)", errNotRegular, st.Mode)
	}
	if int(st.Uid) != runnerUID {
		unix.Close(fd)
		return nil, fmt.Errorf("%w (owner uid %d)", errOwner, st.Uid)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: over %d bytes in all", errTooLarge, limit)
	}
	return b, nil
}
