package harness

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"github.com/attested-runner/attested-runner/provenance"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Module is the Go module the harness builds.
const Module = "github.com/attested-runner/attested-runner"

// Binaries are the programs the harness runs.
type Binaries struct {
	// Dir holds them all.
	Dir string
	// Jobgate, Agent and Verify are the product's binaries.
	Jobgate, Agent, Verify string
	// Listener is the fake Runner.Listener (e2e/cmd/fake-runner-listener),
	// copied into each agent's runner directory as bin/Runner.Listener.
	Listener string
	// HostileClient is e2e/cmd/hostile-client: an agent socket client
	// a hostile job could write.
	HostileClient string
}

// packages maps each binary's file name to its package.
var packages = []struct{ name, pkg string }{
	{"jobgate", "./cmd/jobgate"},
	{"attested-runner", "./cmd/attested-runner"},
	{"attested-verify", "./cmd/attested-verify"},
	{"fake-runner-listener", "./e2e/cmd/fake-runner-listener"},
	{"hostile-client", "./e2e/cmd/hostile-client"},
}

func binariesIn(dir string) *Binaries {
	return &Binaries{
		Dir:           dir,
		Jobgate:       filepath.Join(dir, "jobgate"),
		Agent:         filepath.Join(dir, "attested-runner"),
		Verify:        filepath.Join(dir, "attested-verify"),
		Listener:      filepath.Join(dir, "fake-runner-listener"),
		HostileClient: filepath.Join(dir, "hostile-client"),
	}
}

// Build builds the binaries from the module at repoRoot into dir, static
// and cgo-free as `make build` does, and makes dir world-readable (agents
// run their hooks and the job-side action as an unprivileged user).
func Build(ctx context.Context, repoRoot, dir string) (*Binaries, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("building the binaries needs the go command in PATH: %w", err)
	}
	args := []string{"build", "-trimpath", "-o", dir + string(filepath.Separator)}
	for _, p := range packages {
		args = append(args, p.pkg)
	}
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS="+withoutRace(os.Getenv("GOFLAGS")))
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %w\n%s", err, out)
	}
	return FromDir(dir)
}

// withoutRace drops -race from GOFLAGS: the binaries are built without cgo.
func withoutRace(flags string) string {
	var keep []string
	for _, f := range strings.Fields(flags) {
		if f != "-race" && f != "--race" {
			keep = append(keep, f)
		}
	}
	return strings.Join(keep, " ")
}

// FromDir returns the binaries already built in dir, or an error naming
// the first one missing.
func FromDir(dir string) (*Binaries, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	b := binariesIn(dir)
	for _, p := range []string{b.Jobgate, b.Agent, b.Verify, b.Listener} {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("binary missing: %w (build with: CGO_ENABLED=0 go build -o %s/ ./cmd/... ./e2e/cmd/fake-runner-listener)", err, dir)
		}
		if fi.Mode().Perm()&0o111 == 0 {
			return nil, fmt.Errorf("%s is not executable", p)
		}
	}
	return b, nil
}

// AgentDigest is the SHA-256 of the agent binary: what the agent records in
// its agent-start lifecycle event (it hashes its own executable), hence the
// value reference values must allow.
func (b *Binaries) AgentDigest() ([sha256.Size]byte, error) {
	return FileDigest(b.Agent)
}

// FileDigest returns the SHA-256 of a file's content.
func FileDigest(path string) ([sha256.Size]byte, error) {
	var d [sha256.Size]byte
	b, err := provenance.DigestFile(path)
	copy(d[:], b)
	return d, err
}

// FindRepoRoot walks up from start to the directory whose go.mod declares
// this module.
func FindRepoRoot(start string) (string, error) {
	dir, err := filepath.Abs(start)
	if err != nil {
		return "", err
	}
	for {
		if isModuleRoot(dir) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of module %s above %s", Module, start)
		}
		dir = parent
	}
}

func isModuleRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "module ") {
			return strings.TrimSpace(strings.TrimPrefix(line, "module ")) == Module
		}
	}
	return false
}

// SourceRepoRoot is the repository this package was compiled from, found
// through its source file (for tests; binaries built with -trimpath must use
// FindRepoRoot on a directory instead).
func SourceRepoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) {
		return "", errors.New("source location unknown (built with -trimpath?)")
	}
	return FindRepoRoot(filepath.Dir(file))
}
