package harness

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/fileio"
	"github.com/attested-runner/attested-runner/jobgate"
)

// WorldOptions configure a World.
type WorldOptions struct {
	// Dir holds every file of the world; "" makes a new temporary
	// directory. It is kept after Close (the caller removes it).
	Dir string
	// Bin are the binaries to run (required).
	Bin *Binaries
	// RepoRoot is this repository's checkout: its job-side action
	// (action/attest) is staged into Dir (required).
	RepoRoot string
	GitHub   GitHubOptions
}

// World is one whole system: a fake GitHub, machines, a gate behind a
// recording proxy, and agents. Build it step by step (NewWorld,
// NewMachine, StartGate, StartAgent) and Close it.
type World struct {
	Dir, RepoRoot string
	// Bin are the binaries agents run; the agent binary is a copy staged in
	// Dir, which the runner user can reach wherever the build put it.
	Bin *Binaries
	// AttestAction is the staged job-side action, for `uses:` in jobs.
	AttestAction string
	// AgentDigest is the SHA-256 of the agent binary the reference values
	// allow.
	AgentDigest [sha256.Size]byte
	GitHub      *GitHub
	// Gate and Proxy exist after StartGate. Agents reach the gate through
	// the proxy unless told otherwise.
	Gate  *Gate
	Proxy *Proxy
	// Replicas are the gates started by StartReplica, on Gate's store.
	Replicas []*Gate
	// RunnerRoot is the world's directory on tmpfs (/dev/shm), where the
	// agents' runner directories live; removed by Close.
	RunnerRoot string

	mu       sync.Mutex
	machines []*Machine
	agents   []*Agent
}

// NewWorld creates the world's directory and starts the fake GitHub.
func NewWorld(o WorldOptions) (*World, error) {
	if o.Bin == nil || o.RepoRoot == "" {
		return nil, errors.New("world: binaries and the repository root are required")
	}
	dir := o.Dir
	var err error
	if dir == "" {
		if dir, err = os.MkdirTemp("", "attested-e2e-"); err != nil {
			return nil, err
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	// Traversable by the runner user: agents' hooks and sockets live below.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	if err := checkSearchable(dir); err != nil {
		return nil, err
	}
	w := &World{Dir: dir, RepoRoot: o.RepoRoot}
	if w.Bin, w.AttestAction, err = stageForRunnerUser(o.Bin, o.RepoRoot, dir); err != nil {
		return nil, err
	}
	if w.AgentDigest, err = w.Bin.AgentDigest(); err != nil {
		return nil, err
	}
	if w.RunnerRoot, err = os.MkdirTemp("/dev/shm", "attested-e2e-"); err != nil {
		return nil, fmt.Errorf("tmpfs for runner directories: %w", err)
	}
	if err := os.Chmod(w.RunnerRoot, 0o755); err != nil {
		return nil, err
	}
	if err := StageListener(o.Bin, w.RunnerRoot); err != nil {
		return nil, err
	}
	if w.GitHub, err = StartGitHub(filepath.Join(dir, "github"), o.GitHub); err != nil {
		os.RemoveAll(w.RunnerRoot)
		return nil, err
	}
	return w, nil
}

// NewMachine powers on a machine named name (see harness.NewMachine).
func (w *World) NewMachine(ctx context.Context, name string, o MachineOptions) (*Machine, error) {
	m, err := NewMachine(ctx, filepath.Join(w.Dir, "machines", name), name, o)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.machines = append(w.machines, m)
	w.mu.Unlock()
	return m, nil
}

// ImageID names the runner image whose reference values the world derives.
const ImageID = "attested-runner-image-swtpm"

// WriteReferenceValues derives reference values from machine m (its boot
// PCRs as image id) plus the agent binary's digest, and writes them to
// path: the document an image build publishes.
func (w *World) WriteReferenceValues(m *Machine, id, path string) error {
	im, err := m.ReferenceImage(id)
	if err != nil {
		return err
	}
	return WriteReferenceValues(path, []attest.Image{im}, w.AgentDigest)
}

// StartGate enrolls the machines (their AKs become policy.trustedAKs),
// derives reference values from the first one unless o names some, starts
// the gate and the proxy in front of it.
func (w *World) StartGate(ctx context.Context, o GateOptions, enrolled ...*Machine) (*Gate, error) {
	if len(o.ReferenceValues) == 0 {
		if len(enrolled) == 0 {
			return nil, errors.New("world: no reference values and no machine to derive them from")
		}
		path := filepath.Join(w.Dir, "reference-values.json")
		if err := w.WriteReferenceValues(enrolled[0], ImageID, path); err != nil {
			return nil, err
		}
		o.ReferenceValues = []string{path}
	}
	for _, m := range enrolled {
		o.TrustedAKs = append(o.TrustedAKs, m.AKPath)
	}
	g, err := NewGate(ctx, w.Bin, filepath.Join(w.Dir, "gate"), w.GitHub, o)
	if err != nil {
		return nil, err
	}
	if err := g.Start(ctx); err != nil {
		return nil, err
	}
	p, err := StartProxy(g.URL)
	if err != nil {
		g.Stop()
		return nil, err
	}
	w.Gate, w.Proxy = g, p
	return g, nil
}

// StartReplica starts another gate on the world's gate's store (see
// Gate.Replica), in Dir/gate-N, its configuration changed by edit (if not
// nil: e.g. another path to the database). Agents reach it at its own URL.
func (w *World) StartReplica(ctx context.Context, edit func(*jobgate.Config)) (*Gate, error) {
	if w.Gate == nil {
		return nil, errors.New("world: no gate started")
	}
	w.mu.Lock()
	dir := filepath.Join(w.Dir, fmt.Sprintf("gate-%d", len(w.Replicas)+2))
	w.mu.Unlock()
	r, err := w.Gate.Replica(dir)
	if err != nil {
		return nil, err
	}
	if edit != nil {
		if err := r.Reconfigure(ctx, edit); err != nil {
			return nil, err
		}
	}
	if err := r.Start(ctx); err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.Replicas = append(w.Replicas, r)
	w.mu.Unlock()
	return r, nil
}

// StartAgent starts an agent (see harness.StartAgent); GateURL defaults to
// the proxy in front of the world's gate. Agents get their own directory
// under Dir/agents.
func (w *World) StartAgent(o AgentOptions) (*Agent, error) {
	if o.GateURL == "" {
		if w.Proxy == nil {
			return nil, errors.New("world: no gate started")
		}
		o.GateURL = w.Proxy.URL
	}
	if o.GateKey == "" && w.Gate != nil {
		o.GateKey = w.Gate.PublicKeyPath
	}
	if o.RunnerRoot == "" {
		o.RunnerRoot = w.RunnerRoot
	}
	if o.Name == "" && o.Machine != nil {
		o.Name = o.Machine.Name
	}
	w.mu.Lock()
	dir := filepath.Join(w.Dir, "agents", o.Name)
	for i := 2; ; i++ {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			break
		}
		dir = filepath.Join(w.Dir, "agents", fmt.Sprintf("%s-%d", o.Name, i))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		w.mu.Unlock()
		return nil, err
	}
	w.mu.Unlock()
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	a, err := StartAgent(w.Bin, dir, o)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.agents = append(w.agents, a)
	w.mu.Unlock()
	return a, nil
}

// Agents lists the agents started so far.
func (w *World) Agents() []*Agent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*Agent(nil), w.agents...)
}

// Close stops everything: agents (SIGTERM, then SIGKILL of whatever is
// left), the proxy, the gate, the machines, the fake GitHub. Files under Dir
// stay; the runner directories (tmpfs) go.
func (w *World) Close() {
	var wg sync.WaitGroup
	for _, a := range w.Agents() {
		wg.Add(1)
		go func() { defer wg.Done(); a.Close() }()
	}
	wg.Wait()
	if w.Proxy != nil {
		w.Proxy.Close()
	}
	if w.Gate != nil {
		w.Gate.Stop()
	}
	w.mu.Lock()
	replicas := w.Replicas
	w.mu.Unlock()
	for _, r := range replicas {
		r.Stop()
	}
	w.mu.Lock()
	ms := w.machines
	w.mu.Unlock()
	for _, m := range ms {
		m.Close()
	}
	if w.GitHub != nil {
		w.GitHub.Close()
	}
	os.RemoveAll(w.RunnerRoot)
}

// checkSearchable fails unless every directory from / to dir is searchable
// by others: the agents' hooks and sockets live below dir, and the runner
// user (not root) must reach them.
func checkSearchable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("the runner user cannot reach %s: %s is mode %04o (not searchable by others); use a directory under one that is, such as /tmp", dir, d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// stageForRunnerUser puts what the runner user executes into dir: the agent
// binary (its hooks call it), the hostile client (attack tests) and the
// job-side action. A hard link when
// possible (same content, so the same agent digest), else a copy.
func stageForRunnerUser(bin *Binaries, repoRoot, dir string) (*Binaries, string, error) {
	staged := *bin
	staged.Agent = filepath.Join(dir, "bin", filepath.Base(bin.Agent))
	if err := os.MkdirAll(filepath.Dir(staged.Agent), 0o755); err != nil {
		return nil, "", err
	}
	if err := linkOrCopy(bin.Agent, staged.Agent, 0o755); err != nil {
		return nil, "", fmt.Errorf("staging the agent binary: %w", err)
	}
	if bin.HostileClient != "" {
		staged.HostileClient = filepath.Join(dir, "bin", filepath.Base(bin.HostileClient))
		if err := linkOrCopy(bin.HostileClient, staged.HostileClient, 0o755); err != nil {
			return nil, "", fmt.Errorf("staging the hostile client: %w", err)
		}
	}
	src := filepath.Join(repoRoot, "action", "attest")
	action := filepath.Join(dir, "action", "attest")
	entries, err := os.ReadDir(src)
	if err != nil {
		return nil, "", fmt.Errorf("the job-side action: %w", err)
	}
	if err := os.MkdirAll(action, 0o755); err != nil {
		return nil, "", err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return nil, "", err
		}
		if err := linkOrCopy(filepath.Join(src, e.Name()), filepath.Join(action, e.Name()), fi.Mode().Perm()|0o444); err != nil {
			return nil, "", fmt.Errorf("staging the job-side action: %w", err)
		}
	}
	return &staged, action, nil
}

// linkOrCopy hard-links src at dst when src already has mode perm (a link
// shares the inode: changing its mode would change the source's), else
// copies it with mode perm.
func linkOrCopy(src, dst string, perm os.FileMode) error {
	if fi, err := os.Stat(src); err == nil && fi.Mode().Perm() == perm {
		if err := os.Link(src, dst); err == nil {
			return nil
		}
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return fileio.WriteFileAtomic(dst, b, perm)
}
