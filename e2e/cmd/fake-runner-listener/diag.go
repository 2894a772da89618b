package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Trace levels as actions/runner's HostTraceListener writes them.
const (
	levelInfo    = "INFO"
	levelVerbose = "VERB"
	levelWarning = "WARN"
	levelError   = "ERR "
)

// diagLog is a _diag trace file in the runner's format
// (Runner.Common/HostTraceListener.cs):
//
//	file:  <prefix>_<yyyyMMdd-HHmmss>-utc.log
//	line:  [<UTC time, .NET "u" format> <level> <source>] <message>
//	       e.g. [2024-05-01 12:00:00Z INFO Listener] Version: 2.336.0
type diagLog struct {
	mu   sync.Mutex
	f    *os.File
	path string
	now  func() time.Time
}

// openDiag creates <dir>/<prefix>_<time>-utc.log, appending when the file
// of that second exists (as the runner does).
func openDiag(dir, prefix string, now func() time.Time) (*diagLog, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, fmt.Sprintf("%s_%s-utc.log", prefix, now().UTC().Format("20060102-150405")))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &diagLog{f: f, path: path, now: now}, nil
}

func (d *diagLog) write(level, source, format string, args ...any) {
	if d == nil {
		return
	}
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.f, "[%s %s %s] %s\n", d.now().UTC().Format("2006-01-02 15:04:05Z"), level, source, msg)
}

func (d *diagLog) Info(source, format string, args ...any) {
	d.write(levelInfo, source, format, args...)
}
func (d *diagLog) Verbose(source, format string, args ...any) {
	d.write(levelVerbose, source, format, args...)
}
func (d *diagLog) Warning(source, format string, args ...any) {
	d.write(levelWarning, source, format, args...)
}
func (d *diagLog) Error(source, format string, args ...any) {
	d.write(levelError, source, format, args...)
}

func (d *diagLog) Close() error {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.f.Close()
}

// terminal writes user-facing lines to stdout/stderr and traces them, as
// Runner.Common/Terminal.cs does ("WRITE LINE: ..." / "WRITE ERROR: ...").
type terminal struct {
	out, errw *os.File
	log       *diagLog
	mu        sync.Mutex
}

func (t *terminal) Line(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.log.Info("Terminal", "WRITE LINE: %s", s)
	fmt.Fprintln(t.out, s)
}

func (t *terminal) Error(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.log.Error("Terminal", "WRITE ERROR: %s", s)
	fmt.Fprintln(t.errw, s)
}

// stepLog is the log of one job step (a timeline record). The runner writes
// step output to _diag/pages/<timeline>_<record>_<n>.log, each line prefixed
// with the UTC time in .NET "O" format (Runner.Common/Logging.cs), uploads
// the page when the step ends and then deletes it. With
// GITHUB_ACTIONS_RUNNER_TRACE set it also traces every line into the Worker
// log as "Enqueue web console line queue: <line>" (Runner.Common/
// JobServerQueue.cs QueueWebConsoleLine, Trace.Verbose): the whole line,
// then, for a line over 1024 characters, a second trace saying it is cut
// for the live console.
type stepLog struct {
	w      *worker
	f      *os.File
	path   string
	closed bool
}

func (w *worker) newStepLog(name string) *stepLog {
	path := filepath.Join(w.pagesDir, fmt.Sprintf("%s_%s_1.log", w.timelineID, newUUID()))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
	if err != nil {
		w.log.Warning("PagingLogger", "cannot create page for %s: %v", name, err)
	}
	w.log.Info("StepsRunner", "Processing step: DisplayName='%s'", name)
	return &stepLog{w: w, f: f, path: path}
}

// Output writes one line to the step's page (and the Worker trace).
func (s *stepLog) Output(line string) {
	line = strings.TrimRight(line, "\r")
	if s.f != nil && !s.closed {
		fmt.Fprintf(s.f, "%s %s\n", s.w.now().UTC().Format("2006-01-02T15:04:05.0000000Z"), line)
	}
	if s.w.trace && line != "" {
		s.w.log.Verbose("JobServerQueue", "Enqueue web console line queue: %s", line)
		if len(line) > 1024 {
			s.w.log.Verbose("JobServerQueue", "Web console line is more than 1024 chars, truncate to first 1024 chars")
		}
	}
}

// End "uploads" the page: the runner deletes a page once it is uploaded.
func (s *stepLog) End() {
	if s.f == nil || s.closed {
		return
	}
	s.closed = true
	s.f.Close()
	s.w.log.Info("JobServerQueue", "Try to upload 1 log files or attachments, success rate: 1/1.")
	os.Remove(s.path)
}

// lineWriter splits a process's output into lines for a stepLog; one
// goroutine at a time writes to it (exec.Cmd with Stdout == Stderr).
type lineWriter struct {
	log *stepLog
	buf []byte
}

// maxLine bounds one logged line; longer output is split.
const maxLine = 64 << 10

func (lw *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			lw.buf = append(lw.buf, p...)
			for len(lw.buf) >= maxLine {
				lw.log.Output(string(lw.buf[:maxLine]))
				lw.buf = lw.buf[maxLine:]
			}
			break
		}
		lw.buf = append(lw.buf, p[:i]...)
		lw.log.Output(string(lw.buf))
		lw.buf = lw.buf[:0]
		p = p[i+1:]
	}
	return n, nil
}

func (lw *lineWriter) Flush() {
	if len(lw.buf) > 0 {
		lw.log.Output(string(lw.buf))
		lw.buf = lw.buf[:0]
	}
}
