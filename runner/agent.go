package runner

import (
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/fileio"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
	"github.com/attested-runner/attested-runner/provenance"
	"golang.org/x/sys/unix"
)

// Config configures the agent. Every duration has a default; the
// collaborators (Gate, Collector, PowerOff) are injected.
type Config struct {
	// Gate is the gate client (its HTTP client carries the gate's CA).
	Gate *gateapi.Client
	// GateKeys are the gate's signing keys, pinned in the measured image
	// (never fetched from the gate): an admission answer must be signed by
	// one of them, and the environment certificate too.
	GateKeys []crypto.PublicKey
	// Collector owns the TPM or TDX device and the environment key.
	Collector attest.Collector
	// AgentDigest is the SHA-256 of this agent's binary (agent-start).
	AgentDigest  [sha256.Size]byte
	AgentVersion string
	// AgentPath is this binary; the hook scripts run it as the runner user.
	AgentPath string
	// RunnerDir holds the GitHub runner (bin/Runner.Listener, _diag, _work).
	RunnerDir string
	// RunnerUID and RunnerGID: the unprivileged user the runner and the job
	// run as. The agent's socket serves only this uid.
	RunnerUID, RunnerGID int
	// Labels the agent asks the gate for (the gate's policy decides).
	Labels []string
	// VMID names the fleet VM the agent runs in, for the gate's fleet
	// ("" outside a fleet; see cmd/attested-runner --vm-id).
	VMID string
	// EKActivation: prove the AK to the gate by EK credential activation
	// (no AK enrolled by hand): the collector must be an attest.EKActivator
	// whose TPM has an EK certificate in NV.
	EKActivation bool
	// SocketPath is the agent's socket (default /run/attested-runner/agent.sock).
	SocketPath string
	// StateDir holds generated hook scripts and the dispatch attestation
	// (default /run/attested-runner).
	StateDir string
	// AdmissionDeadline: give up (and power off) if not admitted by then.
	AdmissionDeadline time.Duration
	// IdleTTL: tear down if no job started this long after the runner
	// started listening.
	IdleTTL time.Duration
	// JobTimeout: tear down a job running this long.
	JobTimeout time.Duration
	// TeardownDeadline bounds deregistration retries.
	TeardownDeadline time.Duration
	// AttestTimeout bounds hashing the files of one attest request
	// (default 30 minutes); MaxSubjectSize bounds one file (default
	// DefaultMaxSubjectSize).
	AttestTimeout  time.Duration
	MaxSubjectSize int64
	// AllowRunnerDirOnDiskInsecure lets RunnerDir be on a persistent
	// filesystem. The GitHub runner writes the decoded JIT configuration
	// (with the runner's private key) into its directory, so by default it
	// must be RAM-backed (tmpfs, ramfs: the initramfs image), never disk.
	// Tests and the local demo only.
	AllowRunnerDirOnDiskInsecure bool
	// SigstoreTransport, optional, carries requests to the gate policy's
	// Fulcio and Rekor (a private instance's CA); default
	// http.DefaultTransport.
	SigstoreTransport http.RoundTripper
	// PowerOff ends the VM (systemctl poweroff, reboot(2), a test recorder).
	PowerOff func(ctx context.Context) error
	// OnListening, if set, is called once the runner has started (for
	// supervisors and the start-up benchmark).
	OnListening func(runnerName string)
	Log         *slog.Logger
	Now         func() time.Time
}

func (c *Config) defaults() error {
	switch {
	case c.Gate == nil || c.Collector == nil:
		return errors.New("agent: gate client and collector are required")
	case len(c.GateKeys) == 0:
		return errors.New("agent: no pinned gate key: the agent could not tell the gate's answer from a forged one")
	case c.RunnerDir == "" || c.AgentPath == "":
		return errors.New("agent: runner directory and agent path are required")
	case c.PowerOff == nil:
		return errors.New("agent: a power-off action is required")
	}
	if !c.AllowRunnerDirOnDiskInsecure {
		if err := checkRAMBacked(c.RunnerDir); err != nil {
			return err
		}
	}
	if c.SocketPath == "" {
		c.SocketPath = "/run/attested-runner/agent.sock"
	}
	if c.StateDir == "" {
		c.StateDir = "/run/attested-runner"
	}
	if err := c.checkRunnerUserReach(); err != nil {
		return err
	}
	if c.AdmissionDeadline == 0 {
		c.AdmissionDeadline = 10 * time.Minute
	}
	if c.IdleTTL == 0 {
		c.IdleTTL = 15 * time.Minute
	}
	if c.JobTimeout == 0 {
		c.JobTimeout = 6 * time.Hour
	}
	if c.TeardownDeadline == 0 {
		c.TeardownDeadline = 2 * time.Minute
	}
	if c.AttestTimeout == 0 {
		c.AttestTimeout = 30 * time.Minute
	}
	if c.MaxSubjectSize == 0 {
		c.MaxSubjectSize = DefaultMaxSubjectSize
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Agent is one environment's life: boot evidence, admission, one job,
// teardown. Run it once.
type Agent struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	admission *gateapi.AdmitResponse
	cert      *provenance.EnvCertificate
	evDigest  []byte // SHA-256 of the admission evidence
	// refusedRunner names the runner of an admission answer the agent
	// refused: teardown asks the gate to remove it.
	refusedRunner string
	job           *jobState
	jobEvents     chan string // "started", "completed"

	listener *listenerProc
	// jobStartedFlag is set at job start; the listener's output is not
	// trusted after it.
	jobStartedFlag atomic.Bool
}

type jobState struct {
	report    *HookReport
	job       provenance.Job
	buildID   string
	startedAt time.Time
	dispatch  []byte // digest of the dispatch attestation
	// dispatchBundle is the signed dispatch attestation itself: it rides
	// in each provenance bundle (BuildEnv L2.agent-dispatch).
	dispatchBundle []byte
	actions        WorkerActions // read from the Worker log at job start
	ended          bool
}

// New checks the configuration.
func New(cfg Config) (*Agent, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, log: cfg.Log, jobEvents: make(chan string, 4)}, nil
}

// Outcome is how an agent's life ended.
type Outcome struct {
	// Reason is why teardown happened.
	Reason string
	// Admitted reports whether the gate admitted the environment.
	Admitted bool
	// JobStarted reports whether a job was dispatched.
	JobStarted bool
	// Deregistered reports whether the gate confirmed removal.
	Deregistered bool
	// Err is the error that ended the life early, if any.
	Err error
	// RunnerOutcome classifies the end for the gate (OutcomeDone,
	// OutcomeFailed, OutcomeImageOutOfDate).
	RunnerOutcome string
}

// Run is the agent's whole life. It always ends with teardown: lifecycle
// event, key destruction, deregistration, power-off, whatever happened
// before (fail closed: no admission means no runner, ever).
func (a *Agent) Run(ctx context.Context) *Outcome {
	out := &Outcome{RunnerOutcome: OutcomeFailed}
	out.Reason, out.Err = a.live(ctx, out)
	a.teardown(ctx, out)
	return out
}

func (a *Agent) live(ctx context.Context, out *Outcome) (string, error) {
	c := a.cfg
	if err := a.boot(); err != nil {
		return "boot failed", err
	}
	jit, err := a.admit(ctx)
	if errors.Is(err, errAnswerRefused) {
		return err.Error(), err
	}
	if err != nil {
		return "not admitted", err
	}
	out.Admitted = true

	ln, err := listenSocket(c.SocketPath)
	if err != nil {
		return "socket failed", err
	}
	sctx, stopSocket := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSocket()
	srv := serveSocket(sctx, ln, c.RunnerUID, a.handleSocket, a.log)
	defer srv.Close()

	hooks, err := a.writeHooks()
	if err != nil {
		return "hooks failed", err
	}
	runnerJIT, err := DisableSelfUpdate(jit)
	clear(jit)
	if err != nil {
		return "runner configuration refused", err
	}
	a.listener, err = startListener(c.RunnerDir, runnerJIT, hooks, c.RunnerUID, c.RunnerGID, &a.jobStartedFlag, a.log)
	clear(runnerJIT) // the only copy now lives in the child's environment
	if err != nil {
		return "runner failed to start", err
	}
	a.log.Info("runner listening", "runner", a.admission.RunnerName, "labels", a.admission.Labels, "idle_ttl", c.IdleTTL)
	if c.OnListening != nil {
		c.OnListening(a.admission.RunnerName)
	}

	idle := time.NewTimer(c.IdleTTL)
	defer idle.Stop()
	var jobTimer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return "agent stopped by signal", nil
		case exit := <-a.listener.exited:
			a.mu.Lock()
			started, ended := a.job != nil, a.job != nil && a.job.ended
			a.mu.Unlock()
			out.JobStarted = started
			if exit.code == 0 && ended {
				out.RunnerOutcome = OutcomeDone
				return "job completed", nil
			}
			var reason string
			out.RunnerOutcome, reason = exit.outcome()
			if out.RunnerOutcome == OutcomeDone {
				// A clean exit without a completed job: its registration
				// was deleted while it polled (Runner.cs exits 0), or it
				// was stopped. Not a success.
				out.RunnerOutcome = OutcomeFailed
				reason = "runner exited without completing a job (exit 0: its registration was deleted, or it was stopped)"
			}
			return reason, nil
		case <-idle.C:
			out.RunnerOutcome = OutcomeIdle
			return fmt.Sprintf("idle: no job within %s", c.IdleTTL), nil
		case <-jobTimer:
			return fmt.Sprintf("job exceeded %s", c.JobTimeout), nil
		case ev := <-a.jobEvents:
			switch ev {
			case "started":
				out.JobStarted = true
				idle.Stop()
				jobTimer = time.After(c.JobTimeout)
			case "completed":
				// The listener reports and exits by itself; give it a moment.
				select {
				case exit := <-a.listener.exited:
					if exit.code == 0 {
						out.RunnerOutcome = OutcomeDone
						return "job completed", nil
					}
					return "runner exited after the job: " + exit.String(), nil
				case <-time.After(30 * time.Second):
					out.RunnerOutcome = OutcomeDone
					return "job completed (runner did not exit)", nil
				case <-ctx.Done():
					return "agent stopped by signal", nil
				}
			}
		}
	}
}

// boot records the agent and creates the environment keys:
// agent-start < keys < env-key (BuildEnv L2.agent-quote prerequisites).
func (a *Agent) boot() error {
	c := a.cfg.Collector
	if err := c.Extend(attest.AgentStartEvent(a.cfg.AgentDigest)); err != nil {
		return err
	}
	if err := c.GenerateKeys(); err != nil {
		return err
	}
	if err := c.Extend(attest.EnvKeyEvent(c.EnvKey(), c.HPKE().PublicKey())); err != nil {
		return err
	}
	a.log.Info("environment key created", "key", attest.KeyDigest(c.EnvKey())[:16], "kind", c.Kind())
	return nil
}

// admit runs challenge -> evidence -> admit until admitted, refused, or past
// the admission deadline (bounded retries with backoff and jitter). It
// returns the opened JIT configuration, in memory only.
func (a *Agent) admit(ctx context.Context) ([]byte, error) {
	c := a.cfg
	actx, cancel := context.WithTimeout(ctx, c.AdmissionDeadline)
	defer cancel()
	var resp *gateapi.AdmitResponse
	var nonce, evJSON []byte
	var activation *gateapi.Activation
	if c.EKActivation {
		act, ok := c.Collector.(attest.EKActivator)
		if !ok {
			return nil, fmt.Errorf("admission: EK activation: the %s collector cannot activate credentials", c.Collector.Kind())
		}
		ar, err := act.ActivationRequest()
		if err != nil {
			return nil, fmt.Errorf("admission: EK activation: %w", err)
		}
		if ar == nil {
			return nil, fmt.Errorf("admission: EK activation: %w in the TPM's NV", attest.ErrNoEKCertificate)
		}
		activation = &gateapi.Activation{EKCertificate: ar.EKCertificate, AKPublic: ar.AKPublic}
	}
	err := gateapi.Retry(actx, 1<<20, 500*time.Millisecond, 30*time.Second, func(attempt int) error {
		var ch *gateapi.ChallengeResponse
		var err error
		if activation != nil {
			ch, err = c.Gate.ChallengeActivation(actx, activation)
		} else {
			ch, err = c.Gate.Challenge(actx)
		}
		if err != nil {
			a.log.Warn("gate challenge failed; retrying", "attempt", attempt+1, "err", err)
			return err
		}
		var secret []byte
		if activation != nil {
			if ch.Credential == nil {
				return errors.New("the gate answered an activation challenge without a credential")
			}
			// TPM2_ActivateCredential: only this TPM (its EK), for this AK.
			if secret, err = c.Collector.(attest.EKActivator).ActivateCredential(&attest.Credential{
				IDObject: ch.Credential.IDObject, EncryptedSecret: ch.Credential.EncryptedSecret}); err != nil {
				return fmt.Errorf("EK activation: %w", err)
			}
		}
		ev, err := c.Collector.Collect(attest.AdmissionChallenge(gateapi.AdmissionNonce(ch.Nonce, secret)))
		if err != nil {
			return fmt.Errorf("collecting evidence: %w", err)
		}
		if evJSON, err = ev.Encode(); err != nil {
			return err
		}
		resp, err = c.Gate.Admit(actx, &gateapi.AdmitRequest{Nonce: ch.Nonce, Evidence: evJSON, Labels: c.Labels, AgentVersion: c.AgentVersion, VMID: c.VMID,
			Activation: activation, ActivationSecret: secret})
		if err != nil {
			a.log.Warn("admission failed", "attempt", attempt+1, "err", err)
			return err
		}
		nonce = ch.Nonce
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("admission: %w", err)
	}
	jit, cert, err := a.acceptAnswer(resp, nonce, evJSON)
	if err != nil {
		// Whatever minted a runner under this name (the genuine gate, if
		// the answer was swapped on the way) is told to remove it; the
		// request is signed by the environment key, so it removes nothing
		// else.
		if len(resp.RunnerName) <= 128 && !strings.ContainsFunc(resp.RunnerName, unicode.IsControl) {
			a.mu.Lock()
			a.refusedRunner = resp.RunnerName
			a.mu.Unlock()
		}
		return nil, fmt.Errorf("%w: %w", errAnswerRefused, err)
	}
	d := sha256.Sum256(evJSON)
	a.mu.Lock()
	a.admission, a.cert, a.evDigest = resp, cert, d[:]
	a.mu.Unlock()
	a.log.Info("admitted", "runner", resp.RunnerName, "runner_id", resp.RunnerID, "image", cert.Image.ID,
		"level", provenance.LevelName(cert.Level), "certificate_expires", resp.ExpiresAt)
	return jit, nil
}

// errAnswerRefused: the gate (or what answered in its name) admitted the
// environment, but the agent refused the answer.
var errAnswerRefused = errors.New("admission answer refused")

// acceptAnswer checks an admission answer before anything in it is used:
// the gate's signature over it (for this nonce and this evidence) against
// the pinned gate keys, the environment certificate against the same keys
// and for this key and runner; only then the sealed JIT configuration is
// opened, in memory.
func (a *Agent) acceptAnswer(resp *gateapi.AdmitResponse, nonce, evJSON []byte) ([]byte, *provenance.EnvCertificate, error) {
	c := a.cfg
	if err := gateapi.VerifyDelivery(c.GateKeys, nonce, evJSON, resp); err != nil {
		return nil, nil, err
	}
	if resp.Sigstore != nil {
		if err := resp.Sigstore.Validate(); err != nil {
			return nil, nil, fmt.Errorf("the gate's Sigstore instances: %w", err)
		}
	}
	cert, err := provenance.VerifyEnvCert(resp.EnvironmentCertificate, c.GateKeys)
	if err != nil {
		return nil, nil, fmt.Errorf("the gate's environment certificate: %w", err)
	}
	if string(cert.EnvKey) != string(c.Collector.EnvKey()) || cert.RunnerName != resp.RunnerName {
		return nil, nil, errors.New("the gate's environment certificate is for another key or runner")
	}
	jit, err := c.Collector.HPKE().Open(gateapi.JITContext(resp.RunnerName), resp.SealedJITConfig)
	if err != nil {
		return nil, nil, fmt.Errorf("opening the sealed runner configuration: %w", err)
	}
	return jit, cert, nil
}

// writeHooks writes the job hook scripts the runner runs (bash -e, as the
// runner user). They call this binary, which talks to the agent socket.
func (a *Agent) writeHooks() (hookPaths, error) {
	dir := filepath.Join(a.cfg.StateDir, "hooks")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return hookPaths{}, err
	}
	for _, p := range []string{a.cfg.AgentPath, a.cfg.SocketPath} {
		if strings.ContainsAny(p, "'\n") {
			return hookPaths{}, fmt.Errorf("path %q cannot be quoted in a hook script", p)
		}
	}
	write := func(name, event string) (string, error) {
		path := filepath.Join(dir, name)
		script := fmt.Sprintf("#!/usr/bin/env bash\n# Generated by attested-runner: reports the job to the agent (runs as the runner user).\nexec '%s' hook %s --socket '%s'\n",
			a.cfg.AgentPath, event, a.cfg.SocketPath)
		return path, fileio.WriteFileAtomic(path, []byte(script), 0o755)
	}
	h := hookPaths{socket: a.cfg.SocketPath, agent: a.cfg.AgentPath}
	var err error
	if h.started, err = write("job-started.sh", "job-started"); err != nil {
		return h, err
	}
	h.completed, err = write("job-completed.sh", "job-completed")
	return h, err
}

// checkRAMBacked refuses a directory whose filesystem can persist secrets.
func checkRAMBacked(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("runner directory: %w", err)
	}
	switch st.Type {
	case unix.TMPFS_MAGIC, unix.RAMFS_MAGIC:
		return nil
	}
	return fmt.Errorf("runner directory %s is on a persistent filesystem (type %#x): the runner writes its JIT configuration there, so it must be tmpfs or ramfs", dir, st.Type)
}
