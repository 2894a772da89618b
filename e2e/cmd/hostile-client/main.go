// Command hostile-client is what a hostile job could write instead of using
// `attested-runner attest`: a client of the agent socket that hands the
// agent descriptors the real client never would. The end-to-end suite runs
// it as the job's (unprivileged) user to show the agent refuses each.
//
//	hostile-client --socket S [--flags rdonly|nonblock|path|wronly,...] [--grow] --name NAME PATH
//
// It opens PATH with the given flags (default rdonly), sends one attest
// request naming it NAME with that descriptor, and prints the agent's
// answer: "refused: <error>" (exit 0) or "accepted: <digest>" (exit 3).
// With --grow it keeps appending to the file while the request is in
// flight. Every wait is bounded (20 s): an agent that hangs fails the call.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/attested-runner/attested-runner/runner"
)

func main() {
	socket := flag.String("socket", os.Getenv("ATTESTED_RUNNER_SOCKET"), "agent socket")
	flags := flag.String("flags", "rdonly", "open flags: rdonly, nonblock, path, wronly (comma-separated)")
	name := flag.String("name", "", "subject name to send")
	grow := flag.Bool("grow", false, "append to the file while the agent hashes it")
	flag.Parse()
	if flag.NArg() != 1 || *name == "" {
		fmt.Fprintln(os.Stderr, "usage: hostile-client --socket S [--flags F] [--grow] --name NAME PATH")
		os.Exit(2)
	}
	if err := run(*socket, *flags, *name, flag.Arg(0), *grow); err != nil {
		fmt.Fprintln(os.Stderr, "hostile-client:", err)
		os.Exit(1)
	}
}

func run(socket, flags, name, path string, grow bool) error {
	mode := 0
	for _, f := range strings.Split(flags, ",") {
		switch f {
		case "rdonly":
			mode |= syscall.O_RDONLY
		case "nonblock":
			mode |= syscall.O_NONBLOCK
		case "path":
			mode |= 0x200000 // O_PATH
		case "wronly":
			mode |= syscall.O_WRONLY
		default:
			return fmt.Errorf("unknown flag %q", f)
		}
	}
	f, err := os.OpenFile(path, mode, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if grow {
		w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		defer w.Close()
		go func() {
			for ctx.Err() == nil {
				w.Write([]byte("more bytes while the agent hashes\n"))
			}
		}()
	}
	var resp runner.AttestResponse
	err = (&runner.Client{Socket: socket}).Call(ctx, runner.OpAttest, &runner.AttestRequest{Subjects: []string{name}}, &resp, f)
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return fmt.Errorf("the agent did not answer within 20 s: %v", err)
	}
	if err != nil {
		fmt.Printf("refused: %v\n", err)
		return nil
	}
	fmt.Printf("accepted: %s sha256:%s\n", name, resp.Subjects[0].SHA256)
	os.Exit(3)
	return nil
}
