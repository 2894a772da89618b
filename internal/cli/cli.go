// Package cli holds the little the three commands share: flag parsing that
// accepts flags after positional arguments, and exit codes.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/attested-runner/attested-runner/internal/fileio"
)

// Exit codes shared by the commands.
const (
	ExitOK          = 0
	ExitFailed      = 1 // not verified / the command failed
	ExitUsage       = 2 // bad invocation
	ExitInterrupted = 130
)

// ErrUsage marks an invocation error (exit code 2).
var ErrUsage = errors.New("usage")

// Usagef returns a usage error with a message.
func Usagef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, args...))
}

// Parse parses args with fs, letting flags and positional arguments
// interleave (`cmd FILE --flag x`), and returns the positional arguments.
// "--" ends flag parsing.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > 0 && len(rest) < len(args) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// NewFlagSet is a flag set whose usage text is usage, printed to w, and which
// returns errors rather than exiting.
func NewFlagSet(name, usage string, w io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprint(w, usage)
		fmt.Fprintln(w, "\nFlags:")
		fs.PrintDefaults()
	}
	return fs
}

// ReadFile reads a file of at most limit bytes, naming it in errors.
func ReadFile(path string, limit int64) ([]byte, error) { return fileio.ReadFile(path, limit) }

// StringList is a repeatable string flag.
type StringList []string

func (s *StringList) String() string { return strings.Join(*s, ",") }

// Set appends a value.
func (s *StringList) Set(v string) error { *s = append(*s, v); return nil }

// ErrReported means the command already printed why it failed: exit 1
// without another message.
var ErrReported = errors.New("reported")

// Command runs one subcommand.
type Command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// Main dispatches args[0] to a command and maps its error to an exit
// status: nil or --help 0, ErrUsage 2 (with the message), ErrReported 1
// (silently), anything else 1 (with the message). It also serves help and
// version for every program the same way.
func Main(ctx context.Context, program, usage, versionLine string, commands map[string]Command, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return ExitOK
	case "-version", "--version", "version":
		fmt.Fprintln(stdout, versionLine)
		return ExitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "%s: unknown command %q\n\n%s", program, args[0], usage)
		return ExitUsage
	}
	err := cmd(ctx, args[1:], stdout, stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.Is(err, ErrUsage):
		fmt.Fprintf(stderr, "%s: %v\n", program, err)
		return ExitUsage
	case errors.Is(err, ErrReported):
		return ExitFailed
	default:
		fmt.Fprintf(stderr, "%s: %v\n", program, err)
		return ExitFailed
	}
}
