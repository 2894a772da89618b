package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/attested-runner/attested-runner/jobgate"
)

// Config is the "fleet" section of the gate's configuration.
type Config struct {
	// WebhookSecret is the file holding the GitHub App's webhook secret
	// (mode 0600 or stricter). Required: unsigned webhooks are refused.
	WebhookSecret string `json:"webhookSecret"`
	// MetricsListen serves the fleet's Prometheus metrics on their own
	// listener, never the agents' port. Loopback only (put an
	// authenticating proxy in front to export them). Default: none.
	MetricsListen string `json:"metricsListen,omitempty"`
	// ReconcileInterval is how often VMs, runners and jobs are reconciled
	// (default 30s).
	ReconcileInterval jobgate.Duration `json:"reconcileInterval,omitempty"`
	// RecoverDeliveries asks GitHub, at each reconcile, for the App's
	// recent webhook deliveries and processes those the gate never
	// received (one request per reconcile; default true).
	RecoverDeliveries *bool `json:"recoverDeliveries,omitempty"`
	// RecoverInterval is how often the delivery log is read (default 5m,
	// at most once per reconcile; App requests, not the installation's
	// quota).
	RecoverInterval jobgate.Duration `json:"recoverInterval,omitempty"`
	// Pools are the kinds of VM the fleet runs. At least one.
	Pools []PoolConfig `json:"pools"`
}

// PoolConfig is one pool: VMs of one image and one provider, for jobs whose
// labels its labels cover.
type PoolConfig struct {
	// Name is unique; VM names start with it.
	Name string `json:"name"`
	// Labels are the runner labels of the pool's VMs: a queued job whose
	// runs-on labels are all among them creates demand for the pool. The
	// gate grants exactly these to the pool's runners.
	Labels []string `json:"labels"`
	// Image is what the pool's VMs boot, verified before every launch.
	Image ImageConfig `json:"image"`
	// MinIdle VMs are kept admitted and waiting (a warm pool).
	MinIdle int `json:"minIdle,omitempty"`
	// MaxTotal bounds the pool's VMs alive at once (default 4).
	MaxTotal int `json:"maxTotal,omitempty"`
	// LaunchesPerMinute bounds launches (default 6). Each VM's life costs
	// about two GitHub requests (mint, delete); launches also stop while
	// the installation's remaining request quota is below ReserveRequests.
	LaunchesPerMinute float64 `json:"launchesPerMinute,omitempty"`
	// ReserveRequests of the installation's hourly quota are never spent on
	// launches (default 500).
	ReserveRequests int `json:"reserveRequests,omitempty"`
	// IdleTTL: an admitted VM that took no job this long is destroyed
	// (default 10m). AdmissionDeadline: a VM not admitted this long after
	// launch is destroyed (default 5m). JobTimeout: a VM running a job
	// longer is destroyed (default 6h).
	IdleTTL           jobgate.Duration `json:"idleTTL,omitempty"`
	AdmissionDeadline jobgate.Duration `json:"admissionDeadline,omitempty"`
	JobTimeout        jobgate.Duration `json:"jobTimeout,omitempty"`
	// WorkFolder is the JIT runners' work folder (an image built with
	// --scratch: /scratch/_work).
	WorkFolder string `json:"workFolder,omitempty"`
	// Exactly one provider.
	QEMU *QEMUConfig `json:"qemu,omitempty"`
	GCE  *GCEConfig  `json:"gce,omitempty"`
}

// ImageConfig names a runner image and its signed provenance.
type ImageConfig struct {
	// Dir is a build.sh output directory (vmlinuz, initrd.img, cmdline;
	// uki.efi with Boot "uki").
	Dir string `json:"dir,omitempty"`
	// Boot is "qemu-direct" (default: -kernel/-initrd) or "uki" (the
	// signed UKI, Secure Boot).
	Boot string `json:"boot,omitempty"`
	// Provenance is the image's signed SLSA provenance (scripts/image/
	// refvalues --sign-key), checked against the gate's
	// policy.imageSigners and the exact files before every launch.
	Provenance string `json:"provenance"`
}

var poolName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)

// maxConfig bounds the fleet section.
const maxConfig = 1 << 20

// ParseConfig reads the fleet section strictly, fills in defaults, and
// resolves relative paths against dir (the gate configuration's directory).
func ParseConfig(raw []byte, dir string) (*Config, error) {
	if len(raw) > maxConfig {
		return nil, fmt.Errorf("fleet: configuration over %d bytes", maxConfig)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("fleet: trailing data")
	}
	c.resolve(dir)
	return &c, c.validate()
}

func (c *Config) resolve(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.WebhookSecret)
	for i := range c.Pools {
		p := &c.Pools[i]
		abs(&p.Image.Dir)
		abs(&p.Image.Provenance)
		if q := p.QEMU; q != nil {
			abs(&q.StateDir)
			abs(&q.OVMFCode)
			abs(&q.OVMFVars)
		}
		if g := p.GCE; g != nil {
			abs(&g.CredentialsFile)
		}
	}
}

func (c *Config) validate() error {
	if c.WebhookSecret == "" {
		return errors.New("fleet.webhookSecret is required: the fleet acts only on signed webhooks")
	}
	if c.MetricsListen != "" {
		host, _, err := net.SplitHostPort(c.MetricsListen)
		ip := net.ParseIP(host)
		if err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			return fmt.Errorf("fleet.metricsListen %q: must be a loopback address (export through an authenticating proxy)", c.MetricsListen)
		}
	}
	if len(c.Pools) == 0 {
		return errors.New("fleet.pools: at least one pool")
	}
	seen := map[string]bool{}
	for i := range c.Pools {
		p := &c.Pools[i]
		if err := p.validate(); err != nil {
			return fmt.Errorf("fleet.pools[%d] (%s): %w", i, p.Name, err)
		}
		if seen[p.Name] {
			return fmt.Errorf("fleet.pools: %q twice", p.Name)
		}
		seen[p.Name] = true
	}
	return nil
}

func (p *PoolConfig) validate() error {
	switch {
	case !poolName.MatchString(p.Name):
		return fmt.Errorf("name %q: want lower-case letters, digits and '-', starting with a letter, at most 31", p.Name)
	case len(p.Labels) == 0:
		return errors.New("labels: at least one (the runs-on labels the pool serves)")
	case p.Image.Provenance == "":
		return errors.New("image.provenance is required: images are verified before every launch (BuildEnv L1.verify-before-launch)")
	case (p.QEMU == nil) == (p.GCE == nil):
		return errors.New("exactly one provider: qemu or gce")
	case p.MinIdle < 0 || p.MaxTotal < 0 || p.LaunchesPerMinute < 0 || p.ReserveRequests < 0:
		return errors.New("minIdle, maxTotal, launchesPerMinute and reserveRequests must not be negative")
	}
	if p.MaxTotal == 0 {
		p.MaxTotal = 4
	}
	if p.MinIdle > p.MaxTotal {
		return fmt.Errorf("minIdle %d exceeds maxTotal %d", p.MinIdle, p.MaxTotal)
	}
	if p.LaunchesPerMinute == 0 {
		p.LaunchesPerMinute = 6
	}
	if p.ReserveRequests == 0 {
		p.ReserveRequests = 500
	}
	switch p.Image.Boot {
	case "":
		p.Image.Boot = "qemu-direct"
	case "qemu-direct", "uki":
	default:
		return fmt.Errorf("image.boot %q: want qemu-direct or uki", p.Image.Boot)
	}
	if p.Image.Dir == "" {
		return errors.New("image.dir is required: the files the provenance covers are checked before every launch")
	}
	if p.GCE != nil && p.Image.Boot != "uki" {
		return errors.New("gce pools boot the signed UKI: image.boot must be uki")
	}
	for _, l := range p.Labels {
		if l == "" || len(l) > 100 || strings.ContainsAny(l, ", \t\n") {
			return fmt.Errorf("label %q", l)
		}
	}
	if !slices.ContainsFunc(p.Labels, func(l string) bool { return strings.EqualFold(l, "self-hosted") }) {
		p.Labels = append([]string{"self-hosted"}, p.Labels...)
	}
	if p.QEMU != nil {
		return p.QEMU.validate()
	}
	return p.GCE.validate()
}

func (p *PoolConfig) idleTTL() time.Duration { return p.IdleTTL.Or(10 * time.Minute) }
func (p *PoolConfig) admissionDeadline() time.Duration {
	return p.AdmissionDeadline.Or(5 * time.Minute)
}
func (p *PoolConfig) jobTimeout() time.Duration { return p.JobTimeout.Or(6 * time.Hour) }

// matches reports whether a job with these runs-on labels can run on the
// pool's runners: GitHub gives a job to a runner that has every one of its
// labels (case-insensitive).
func (p *PoolConfig) matches(jobLabels []string) bool {
	if len(jobLabels) == 0 {
		return false
	}
	for _, l := range jobLabels {
		if !slices.ContainsFunc(p.Labels, func(m string) bool { return strings.EqualFold(l, m) }) {
			return false
		}
	}
	return true
}
