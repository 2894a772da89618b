package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/attested-runner/attested-runner/internal/fileio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
)

// GateOptions configure a gate. ReferenceValues and TrustedAKs are files;
// the rest default to values fit for tests.
type GateOptions struct {
	ReferenceValues []string
	TrustedAKs      []string
	// TrustedEKRoots are PEM files of EK CAs (policy.trustedEKRoots).
	TrustedEKRoots []string
	// TTL: zero fields take the gate's defaults, except ReconcileInterval
	// (default here 1 s, so reconcile outcomes show within seconds).
	TTL jobgate.TTLConfig
	// Labels every runner gets (default self-hosted, attested).
	Labels        []string
	AllowedLabels []string
	// Store selects the store (nil: bbolt in the gate's data directory).
	Store *jobgate.StoreConfig
}

// Gate is jobgate running as a process (`jobgate serve`), on a fixed
// loopback address so that it can be stopped and started again under the
// agents' feet.
type Gate struct {
	// Dir holds the gate's files (mode 0700): config.json, the signing key,
	// data/gate.db (the store), gate.log (its JSON log, all runs appended),
	// roots.pem (its public keys, once Roots is called).
	Dir, ConfigPath, KeyPath, LogPath string
	// PublicKeyPath is the signing key's public half (what `jobgate
	// keygen` printed), outside Dir so that agents running as another user
	// can read it: the key an image pins (the agent's --gate-key).
	PublicKeyPath string
	// URL is the gate's base URL (http://127.0.0.1:PORT).
	URL string

	bin *Binaries
	cfg jobgate.Config

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// NewGate prepares a gate in dir for the fake GitHub gh: a fresh signing
// key (`jobgate keygen`), a free loopback port and the configuration. It
// does not start it.
func NewGate(ctx context.Context, bin *Binaries, dir string, gh *GitHub, o GateOptions) (*Gate, error) {
	if len(o.Labels) == 0 {
		o.Labels = []string{"self-hosted", "attested"}
	}
	if o.TTL.ReconcileInterval == 0 {
		o.TTL.ReconcileInterval = jobgate.Duration(time.Second)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	g := &Gate{Dir: dir, ConfigPath: filepath.Join(dir, "config.json"), KeyPath: filepath.Join(dir, "signing-key.pem"),
		LogPath: filepath.Join(dir, "gate.log"), URL: "http://" + addr, bin: bin}
	pub, err := exec.CommandContext(ctx, bin.Jobgate, "keygen", "--out", g.KeyPath).Output()
	if err != nil {
		return nil, fmt.Errorf("jobgate keygen: %w: %s", err, pub)
	}
	g.PublicKeyPath = filepath.Join(filepath.Dir(dir), filepath.Base(dir)+"-key.pub.pem")
	if err := fileio.WriteFileAtomic(g.PublicKeyPath, pub, 0o644); err != nil {
		return nil, err
	}
	g.cfg = jobgate.Config{
		Listen:     addr,
		GateID:     "https://gate.e2e.test",
		BuilderID:  "https://gate.e2e.test/builder/v1",
		DataDir:    filepath.Join(dir, "data"),
		SigningKey: g.KeyPath,
		GitHub: jobgate.GitHubConfig{
			APIURL: gh.URL() + "/", AppID: gh.AppID, InstallationID: gh.InstallationID,
			PrivateKey: gh.AppKeyPath, Org: gh.Org, Labels: o.Labels,
		},
		Policy: jobgate.PolicyConfig{
			ReferenceValues: o.ReferenceValues, TrustedAKs: o.TrustedAKs, TrustedEKRoots: o.TrustedEKRoots, AllowedLabels: o.AllowedLabels,
			AllowSoftwareTPMUnsafe: true,
		},
		TTL:   o.TTL,
		Store: o.Store,
	}
	if err := g.writeConfig(); err != nil {
		return nil, err
	}
	return g, nil
}

// Replica prepares another gate in dir on g's store (which must be one
// that several gates share: PostgreSQL), configuration and signing key (a
// replicated gate is one gate to agents and consumers: they pin one key),
// on a port of its own. It does not start it.
func (g *Gate) Replica(dir string) (*Gate, error) {
	if g.cfg.Store == nil || g.cfg.Store.Postgres == nil {
		return nil, errors.New("gate replica: only a PostgreSQL store is shared")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	r := &Gate{Dir: dir, ConfigPath: filepath.Join(dir, "config.json"), KeyPath: g.KeyPath,
		PublicKeyPath: g.PublicKeyPath, LogPath: filepath.Join(dir, "gate.log"), URL: "http://" + addr, bin: g.bin}
	r.cfg = g.cfg
	r.cfg.Listen = addr
	r.cfg.DataDir = filepath.Join(dir, "data")
	if err := r.writeConfig(); err != nil {
		return nil, err
	}
	return r, nil
}

// Kill ends the gate with SIGKILL (a crash: no shutdown, nothing flushed)
// and waits until it is gone.
func (g *Gate) Kill() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd == nil {
		return
	}
	syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
	<-g.done
	g.cmd = nil
}

func (g *Gate) writeConfig() error {
	b, err := json.MarshalIndent(g.cfg, "", "  ")
	if err != nil {
		return err
	}
	return fileio.WriteFileAtomic(g.ConfigPath, append(b, '\n'), 0o600)
}

// Config returns a copy of the gate's configuration.
func (g *Gate) Config() jobgate.Config { return g.cfg }

// Start runs `jobgate serve` and waits until /readyz answers (at most
// 15 s). A gate that exits while starting is an error carrying its log.
func (g *Gate) Start(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd != nil {
		return errors.New("gate already running")
	}
	logf, err := os.OpenFile(g.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(g.bin.Jobgate, "serve", "--config", g.ConfigPath, "--log-format", "json")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting jobgate: %w", err)
	}
	done := make(chan struct{})
	g.cmd, g.done = cmd, done
	go func() {
		cmd.Wait()
		close(done)
	}()
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	err = poll(rctx, 20*time.Millisecond, func() (bool, error) {
		select {
		case <-done:
			return false, fmt.Errorf("jobgate exited at start: %s", tail(g.LogPath, 3000))
		default:
		}
		resp, err := hc.Get(g.URL + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		g.stopLocked()
		return fmt.Errorf("gate not ready: %w", err)
	}
	return nil
}

// Running reports whether the gate process is up.
func (g *Gate) Running() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cmd != nil
}

// Pid is the gate's process id (0 when stopped).
func (g *Gate) Pid() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd == nil {
		return 0
	}
	return g.cmd.Process.Pid
}

// Stop ends the gate with SIGTERM (a graceful shutdown), SIGKILL after
// 10 s. Idempotent.
func (g *Gate) Stop() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stopLocked()
}

func (g *Gate) stopLocked() error {
	if g.cmd == nil {
		return nil
	}
	cmd, done := g.cmd, g.done
	g.mu.Unlock()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
	g.mu.Lock()
	g.cmd = nil
	return nil
}

// Restart stops the gate and starts it again on the same address, store
// and configuration.
func (g *Gate) Restart(ctx context.Context) error {
	if err := g.Stop(); err != nil {
		return err
	}
	return g.Start(ctx)
}

// Reconfigure edits the configuration and, if the gate runs, restarts it
// so that the change takes effect.
func (g *Gate) Reconfigure(ctx context.Context, edit func(*jobgate.Config)) error {
	running := g.Running()
	if err := g.Stop(); err != nil {
		return err
	}
	edit(&g.cfg)
	if err := g.writeConfig(); err != nil {
		return err
	}
	if running {
		return g.Start(ctx)
	}
	return nil
}

// AuditLog returns the gate's audit log, read with `jobgate audit show`
// (through the running gate's admin socket, or from the store when the gate
// is stopped).
func (g *Gate) AuditLog(ctx context.Context) ([]jobgate.AuditRecord, error) {
	var recs []jobgate.AuditRecord
	err := func() error {
		var out, errb bytes.Buffer
		cmd := exec.CommandContext(ctx, g.bin.Jobgate, "audit", "show", "--config", g.ConfigPath)
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("jobgate audit show: %w: %s", err, errb.String())
		}
		sc := bufio.NewScanner(&out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r jobgate.AuditRecord
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				return fmt.Errorf("audit record %q: %w", sc.Text(), err)
			}
			recs = append(recs, r)
		}
		return sc.Err()
	}()
	return recs, err
}

// VerifyAudit runs `jobgate audit verify` and returns its report
// ("audit log OK: N records, head H"); a broken chain is an error.
func (g *Gate) VerifyAudit(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, g.bin.Jobgate, "audit", "verify", "--config", g.ConfigPath).CombinedOutput()
	report := strings.TrimSpace(string(out))
	if err != nil {
		return report, fmt.Errorf("jobgate audit verify: %w: %s", err, report)
	}
	return report, nil
}

// Roots fetches the gate's public keys (GET /v1/roots), writes them to
// Dir/roots.pem for consumers' --gate-key, and returns that path.
func (g *Gate) Roots(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+gateapi.PathRoots, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", gateapi.PathRoots, resp.Status)
	}
	path := filepath.Join(g.Dir, "roots.pem")
	return path, fileio.WriteFileAtomic(path, b, 0o644)
}

// LogRecords parses the gate's JSON log (every run so far).
func (g *Gate) LogRecords() ([]map[string]any, error) { return jsonLog(g.LogPath) }

// jsonLog parses a slog JSON log, skipping lines that are not JSON.
func jsonLog(path string) ([]map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []map[string]any
	for _, line := range bytes.Split(b, []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			out = append(out, m)
		}
	}
	return out, nil
}

// AuditFilter returns the records of an audit log that match action
// (empty: any) and result (empty: any).
func AuditFilter(recs []jobgate.AuditRecord, action, result string) []jobgate.AuditRecord {
	var out []jobgate.AuditRecord
	for _, r := range recs {
		if (action == "" || r.Action == action) && (result == "" || r.Result == result) {
			out = append(out, r)
		}
	}
	return out
}
