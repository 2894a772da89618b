package jobgate

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/fileio"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
	"github.com/attested-runner/attested-runner/provenance"
)

// Config is the gate's configuration file (JSON; unknown fields are errors).
// Every field is documented in the README ("Gate configuration").
type Config struct {
	// Listen is the address to serve on, e.g. ":8443" or "127.0.0.1:8080".
	Listen string `json:"listen"`
	// TLS serves HTTPS; without it the gate refuses non-loopback addresses.
	TLS *TLSConfig `json:"tls,omitempty"`
	// GateID names this gate in environment certificates (a URL).
	GateID string `json:"gateId"`
	// BuilderID is the builder id certified to consumers.
	BuilderID string `json:"builderId"`
	// DataDir holds the store (gate.db, unless Store names another) and
	// the admin socket, readable by the gate only.
	DataDir string `json:"dataDir"`
	// Store selects the store: absent, bbolt in DataDir/gate.db; with
	// postgres, a PostgreSQL database that replicas of this gate share.
	Store *StoreConfig `json:"store,omitempty"`
	// AdminSocket is the unix socket (mode 0600) through which the gate's
	// own user reads the audit log while the gate runs (the store is locked
	// by the running gate). Default <dataDir>/admin.sock.
	AdminSocket string `json:"adminSocket,omitempty"`
	// SigningKey is the PEM EC P-256 private key environment certificates
	// are signed with; the file must be mode 0600 or stricter.
	SigningKey string        `json:"signingKey"`
	GitHub     GitHubConfig  `json:"github"`
	Policy     PolicyConfig  `json:"policy"`
	TTL        TTLConfig     `json:"ttl"`
	Limits     *LimitsConfig `json:"limits,omitempty"`
	// Fleet, if set, makes the gate launch and reap runner VMs itself
	// (package jobgate/fleet; README "Fleet").
	Fleet json.RawMessage `json:"fleet,omitempty"`

	dir string // the file's directory: relative paths are resolved against it
}

// StoreConfig selects the gate's store.
type StoreConfig struct {
	Postgres *PostgresConfig `json:"postgres,omitempty"`
}

// PostgresConfig is the database of a replicated gate (README "Replicated
// gate (PostgreSQL)").
type PostgresConfig struct {
	// DSNFile holds the libpq connection string (mode 0600 or stricter):
	// where the password goes. One trailing newline is not part of it.
	DSNFile string `json:"dsnFile,omitempty"`
	// DSN is the connection string itself, for passwordless setups (peer
	// or certificate authentication, a password in ~/.pgpass): a DSN
	// with a password is refused here.
	DSN string `json:"dsn,omitempty"`
	// MaxConns bounds the connection pool (default 10).
	MaxConns int32 `json:"maxConns,omitempty"`
	// Timeout bounds every store operation, connection and lock wait
	// (default 10s): with the database unreachable the gate answers
	// store_unavailable within it.
	Timeout Duration `json:"timeout,omitempty"`
}

// TLSConfig names the server certificate and key.
type TLSConfig struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// GitHubConfig is the GitHub App the gate acts as and where runners go.
type GitHubConfig struct {
	// APIURL: https://api.github.com/ (default) or a GHES /api/v3/ URL.
	APIURL         string `json:"apiUrl,omitempty"`
	AppID          int64  `json:"appId"`
	InstallationID int64  `json:"installationId"`
	// PrivateKey is the App's private key file (mode 0600 or stricter).
	PrivateKey string `json:"privateKey"`
	// Exactly one scope: an organization, or a repository (owner/name).
	Org        string `json:"org,omitempty"`
	Repository string `json:"repository,omitempty"`
	// RunnerGroupID (org scope); default 1, the Default group.
	RunnerGroupID int64 `json:"runnerGroupId,omitempty"`
	// Labels every runner gets (e.g. ["self-hosted", "attested", "linux"]).
	Labels []string `json:"labels"`
	// RunnerNamePrefix starts every runner name; the reconcile loop only
	// touches runners with this prefix. Default "attested-".
	RunnerNamePrefix string `json:"runnerNamePrefix,omitempty"`
	// WorkFolder is the JIT request's work_folder: where the runner puts
	// _work. Images built with build.sh --scratch mount their encrypted
	// scratch disk for it at /scratch/_work. Default: the runner's (_work
	// in its directory, on RAM).
	WorkFolder string `json:"workFolder,omitempty"`
}

// PolicyConfig is what environments must prove.
type PolicyConfig struct {
	// ReferenceValues files (from scripts/image or attested-verify
	// evidence); at least one. Missing reference values stop the gate.
	// With ImageSigners, each must be a runner-image provenance bundle
	// (scripts/image/refvalues --sign-key) signed by one of them.
	ReferenceValues []string `json:"referenceValues"`
	// ImageSigners: PEM public keys of trusted image builders. When set,
	// reference values are taken only from image provenance they signed
	// (BuildEnv L1.image-prov, L2.ref-values); bare files are refused.
	ImageSigners []string `json:"imageSigners,omitempty"`
	// TrustedAKs: PEM files of enrolled attestation keys.
	TrustedAKs []string `json:"trustedAKs,omitempty"`
	// TrustedAKRoots: PEM files of AK certificate CAs (cloud vTPMs).
	TrustedAKRoots []string `json:"trustedAKRoots,omitempty"`
	// AKIntermediates: PEM files of intermediate AK certificate CAs (not
	// trust anchors), for AK certificates whose TPM sends no chain (Azure's
	// "Global Virtual TPM CA - 01").
	AKIntermediates []string `json:"akIntermediates,omitempty"`
	// TrustBundles: names of CA bundles shipped with attested-runner
	// (attest.TrustBundles): "gce" trusts Compute Engine vTPM AK
	// certificates (as trustedAKRoots) and EK certificates (as
	// trustedEKRoots) under Google's CAs.
	TrustBundles []string `json:"trustBundles,omitempty"`
	// TrustedEKRoots: PEM files of EK certificate CAs (TPM manufacturers,
	// a fleet's local EK CA). A TPM whose EK certificate chains to one
	// proves its AK by credential activation, with no AK enrolled.
	TrustedEKRoots []string `json:"trustedEKRoots,omitempty"`
	// EKIntermediates: PEM files of intermediate EK CAs (not trust anchors).
	EKIntermediates []string `json:"ekIntermediates,omitempty"`
	// EKCRLs: CRL files (DER or PEM) of EK CAs; a listed EK certificate is
	// refused, and an out-of-date CRL refuses every certificate it covers.
	EKCRLs []string `json:"ekCRLs,omitempty"`
	// AllowedLabels an agent may ask for on top of github.labels.
	AllowedLabels []string `json:"allowedLabels,omitempty"`
	// DirectKernelBoot: see attest.Policy.DirectKernelBoot.
	DirectKernelBoot bool `json:"directKernelBoot,omitempty"`
	// TPMLevel may only be 2 (or unset), kept so that old configurations
	// parse: the level is earned by the evidence (2 for a TPM, 3 only with
	// a verified TEE report), never configured.
	TPMLevel int `json:"tpmLevel,omitempty"`
	// TDXPCSURL is where TDX TCB collateral comes from: empty for Intel's
	// PCS, a URL for a PCS mirror (PCCS), "none" for no TCB evaluation (TDX
	// environments are then admitted at level 2 only).
	TDXPCSURL string `json:"tdxPcsUrl,omitempty"`
	// SEVSNP is what the SEV-SNP report of a vTPM in an SEV-SNP VM must
	// satisfy besides its image's snpMeasurements (attest.SNPRequirements;
	// AMD's roots).
	SEVSNP *SEVSNPConfig `json:"sevSnp,omitempty"`
	// AllowSoftwareTPMUnsafe admits simulator/swtpm environments. Demos
	// and tests only; certificates then say level 0.
	AllowSoftwareTPMUnsafe bool `json:"allowSoftwareTPMUnsafe,omitempty"`
	// Sigstore, optional, names the Fulcio and Rekor instances admitted
	// environments use for keyless bundles (README "Keyless bundles").
	// Without it every bundle is key-signed.
	Sigstore *gateapi.Sigstore `json:"sigstore,omitempty"`
}

// SEVSNPConfig is policy.sevSnp.
type SEVSNPConfig struct {
	// AllowSMT admits guests whose policy allows SMT.
	AllowSMT bool `json:"allowSMT,omitempty"`
	// MinimumTCB is the lowest reported TCB admitted, per component.
	MinimumTCB attest.SNPTCB `json:"minimumTcb"`
}

// TTLConfig bounds every lifetime. Zero values take the defaults.
type TTLConfig struct {
	Nonce             Duration `json:"nonce,omitempty"`             // default 60s
	Certificate       Duration `json:"certificate,omitempty"`       // default 6h
	UnclaimedRunner   Duration `json:"unclaimedRunner,omitempty"`   // default 15m
	ReconcileInterval Duration `json:"reconcileInterval,omitempty"` // default 1m
	DeregisterSkew    Duration `json:"deregisterSkew,omitempty"`    // default 15m
	OfflineGrace      Duration `json:"offlineGrace,omitempty"`      // default 2m
}

// LimitsConfig bounds request handling.
type LimitsConfig struct {
	// MaxConcurrentVerifications bounds evidence verifications in flight
	// (CPU); default 2 x GOMAXPROCS.
	MaxConcurrentVerifications int `json:"maxConcurrentVerifications,omitempty"`
}

// Duration is a time.Duration written as "90s" in JSON.
type Duration time.Duration

// UnmarshalJSON parses a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"60s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v <= 0 {
		return fmt.Errorf("duration %q must be positive", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Or is d, or def when d is zero.
func (d Duration) Or(def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

// MaxConfigSize bounds the configuration file.
const MaxConfigSize = 1 << 20

// LoadConfig reads and validates a configuration file. Relative paths in it
// are relative to the file's directory.
func LoadConfig(path string) (*Config, error) {
	b, err := readFileLimited(path, MaxConfigSize)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: trailing data", path)
	}
	c.resolve(filepath.Dir(path))
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

// HasFleet reports whether the configuration has a fleet section.
func (c *Config) HasFleet() bool {
	return len(bytes.TrimSpace(c.Fleet)) > 0 && string(bytes.TrimSpace(c.Fleet)) != "null"
}

// Dir is the configuration file's directory, against which relative paths
// resolve (also the fleet section's).
func (c *Config) Dir() string { return c.dir }

func (c *Config) resolve(dir string) {
	c.dir = dir
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.DataDir)
	abs(&c.AdminSocket)
	abs(&c.SigningKey)
	abs(&c.GitHub.PrivateKey)
	if c.Store != nil && c.Store.Postgres != nil {
		abs(&c.Store.Postgres.DSNFile)
	}
	if c.TLS != nil {
		abs(&c.TLS.Cert)
		abs(&c.TLS.Key)
	}
	for _, l := range [][]string{c.Policy.ReferenceValues, c.Policy.ImageSigners, c.Policy.TrustedAKs, c.Policy.TrustedAKRoots,
		c.Policy.TrustedEKRoots, c.Policy.EKIntermediates, c.Policy.EKCRLs, c.Policy.AKIntermediates} {
		for i := range l {
			abs(&l[i])
		}
	}
}

// Validate checks the configuration without touching files.
func (c *Config) Validate() error {
	var errs []error
	need := func(ok bool, msg string) {
		if !ok {
			errs = append(errs, errors.New(msg))
		}
	}
	need(c.Listen != "", "listen is required")
	need(c.GateID != "", "gateId is required")
	need(c.BuilderID != "", "builderId is required")
	need(c.DataDir != "", "dataDir is required")
	need(c.SigningKey != "", "signingKey is required")
	g := c.GitHub
	need(g.AppID > 0 && g.InstallationID > 0 && g.PrivateKey != "", "github.appId, github.installationId and github.privateKey are required")
	need((g.Org == "") != (g.Repository == ""), "github: set exactly one of org and repository")
	need(len(g.Labels) > 0, "github.labels: at least one label (runs-on matches labels)")
	// A fleet brings its pools' signed images as reference values and each
	// VM's own AK.
	fleet := c.HasFleet()
	need(fleet || len(c.Policy.ReferenceValues) > 0, "policy.referenceValues: at least one file; a gate without reference values would admit anything")
	need(fleet || len(c.Policy.TrustedAKs) > 0 || len(c.Policy.TrustedAKRoots) > 0 || len(c.Policy.TrustedEKRoots) > 0 || len(c.Policy.TrustBundles) > 0,
		"policy: trustedAKs, trustedAKRoots, trustedEKRoots or trustBundles required; a gate that trusts no attestation key would admit no TPM")
	need(len(c.Policy.TrustedEKRoots) > 0 || len(c.Policy.EKIntermediates)+len(c.Policy.EKCRLs) == 0, "policy.ekIntermediates and policy.ekCRLs need policy.trustedEKRoots")
	need(len(c.Policy.TrustedAKRoots) > 0 || len(c.Policy.AKIntermediates) == 0, "policy.akIntermediates needs policy.trustedAKRoots")
	need(!fleet || len(c.Policy.ImageSigners) > 0, "policy.imageSigners is required with a fleet: pool images are verified against signed provenance before every launch")
	if c.Store != nil {
		if pg := c.Store.Postgres; pg == nil {
			errs = append(errs, errors.New("store: name a store (postgres), or leave the section out for the embedded one"))
		} else {
			need((pg.DSN == "") != (pg.DSNFile == ""), "store.postgres: set exactly one of dsn and dsnFile")
			need(!DSNHasPassword(pg.DSN), "store.postgres.dsn carries a password: put the DSN in store.postgres.dsnFile (mode 0600) instead")
			need(pg.MaxConns >= 0, "store.postgres.maxConns must not be negative")
		}
	}
	if u := c.Policy.TDXPCSURL; u != "" && u != "none" {
		pu, err := url.Parse(u)
		need(err == nil && (pu.Scheme == "https" || pu.Scheme == "http") && pu.Host != "", "policy.tdxPcsUrl: an http(s) URL, or \"none\"")
	}
	need(c.Policy.TPMLevel == 0 || c.Policy.TPMLevel == 2, "policy.tpmLevel: a TPM quote is level 2; level 3 is earned by a verified TEE report (TDX, SEV-SNP), it cannot be configured")
	if c.Policy.Sigstore != nil {
		if err := c.Policy.Sigstore.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("policy.%w", err))
		}
	}
	if c.TLS == nil && !loopback(c.Listen) {
		errs = append(errs, fmt.Errorf("listen %q is not loopback: configure tls (evidence and sealed configs are confidential only in transit under TLS)", c.Listen))
	}
	for _, l := range append(append([]string(nil), g.Labels...), c.Policy.AllowedLabels...) {
		need(l != "" && len(l) <= 100 && !strings.ContainsAny(l, ", \t\n"), fmt.Sprintf("label %q is not a valid runner label", l))
	}
	return errors.Join(errs...)
}

func loopback(addr string) bool {
	host := addr
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		host = addr[:i]
	}
	host = strings.Trim(host, "[]")
	return host == "127.0.0.1" || host == "::1" || host == "localhost"
}

// AdminSocketPath is where the admin socket is (see AdminSocket).
func (c *Config) AdminSocketPath() string {
	if c.AdminSocket != "" {
		return c.AdminSocket
	}
	return filepath.Join(c.DataDir, "admin.sock")
}

func (c *Config) namePrefix() string {
	if c.GitHub.RunnerNamePrefix != "" {
		return c.GitHub.RunnerNamePrefix
	}
	return "attested-"
}

// LoadPolicy builds the attestation policy the configuration names.
// extraReferenceValues are further signed reference-value files (a fleet's
// pool images).
func (c *Config) LoadPolicy(extraReferenceValues ...string) (*attest.Policy, string, error) {
	signers, err := c.ImageSigners()
	if err != nil {
		return nil, "", err
	}
	rv := &attest.ReferenceValues{Format: attest.ReferenceValuesFormat}
	for _, f := range append(slices.Clone(c.Policy.ReferenceValues), extraReferenceValues...) {
		one, err := loadReferenceValues(f, signers)
		if err != nil {
			return nil, "", err
		}
		rv.Images = append(rv.Images, one.Images...)
		rv.AgentDigests = append(rv.AgentDigests, one.AgentDigests...)
	}
	if err := rv.Validate(); err != nil {
		return nil, "", err
	}
	p := &attest.Policy{
		Reference:              rv,
		DirectKernelBoot:       c.Policy.DirectKernelBoot,
		AllowSoftwareTPMUnsafe: c.Policy.AllowSoftwareTPMUnsafe,
	}
	if s := c.Policy.SEVSNP; s != nil {
		p.SNP = attest.SNPRequirements{AllowSMT: s.AllowSMT, MinimumTCB: s.MinimumTCB}
	}
	switch c.Policy.TDXPCSURL {
	case "none":
	case "":
		p.TDXCollateral = &attest.PCS{}
	default:
		p.TDXCollateral = &attest.PCS{BaseURL: c.Policy.TDXPCSURL}
	}
	for _, f := range c.Policy.TrustedAKs {
		keys, err := provenance.LoadTrustedRoots(f)
		if err != nil {
			return nil, "", fmt.Errorf("policy.trustedAKs: %w", err)
		}
		p.TrustedAKs = append(p.TrustedAKs, keys...)
	}
	for _, f := range c.Policy.TrustedAKRoots {
		certs, err := attest.LoadCertificates(f)
		if err != nil {
			return nil, "", fmt.Errorf("policy.trustedAKRoots: %w", err)
		}
		p.TrustedAKRoots = append(p.TrustedAKRoots, certs...)
	}
	for _, f := range c.Policy.AKIntermediates {
		certs, err := attest.LoadCertificates(f)
		if err != nil {
			return nil, "", fmt.Errorf("policy.akIntermediates: %w", err)
		}
		p.TrustedAKIntermediates = append(p.TrustedAKIntermediates, certs...)
	}
	if p.TrustedEKs, err = loadEKTrust(c.Policy.TrustedEKRoots, c.Policy.EKIntermediates, c.Policy.EKCRLs); err != nil {
		return nil, "", fmt.Errorf("policy: %w", err)
	}
	for _, name := range c.Policy.TrustBundles {
		b, err := attest.LoadTrustBundle(name)
		if err != nil {
			return nil, "", fmt.Errorf("policy.trustBundles: %w", err)
		}
		p.TrustedAKRoots = append(p.TrustedAKRoots, b.Roots...)
		p.TrustedAKIntermediates = append(p.TrustedAKIntermediates, b.Intermediates...)
		if p.TrustedEKs == nil {
			p.TrustedEKs = &attest.EKTrust{}
		}
		p.TrustedEKs.Roots = append(p.TrustedEKs.Roots, b.Roots...)
		p.TrustedEKs.Intermediates = append(p.TrustedEKs.Intermediates, b.Intermediates...)
	}
	digest, err := policyDigest(p)
	if err != nil {
		return nil, "", err
	}
	return p, digest, nil
}

// loadEKTrust loads EK roots, intermediates and CRLs (nil when no root is
// given). Every CRL must be signed by a configured CA: one that matches
// none would check nothing.
func loadEKTrust(roots, intermediates, crls []string) (*attest.EKTrust, error) {
	if len(roots) == 0 {
		return nil, nil
	}
	t := &attest.EKTrust{}
	for _, f := range roots {
		certs, err := attest.LoadCertificates(f)
		if err != nil {
			return nil, fmt.Errorf("trustedEKRoots: %w", err)
		}
		t.Roots = append(t.Roots, certs...)
	}
	for _, f := range intermediates {
		certs, err := attest.LoadCertificates(f)
		if err != nil {
			return nil, fmt.Errorf("ekIntermediates: %w", err)
		}
		t.Intermediates = append(t.Intermediates, certs...)
	}
	for _, f := range crls {
		crl, err := attest.LoadCRL(f)
		if err != nil {
			return nil, fmt.Errorf("ekCRLs: %w", err)
		}
		t.CRLs = append(t.CRLs, crl)
	}
	if err := t.CheckCRLIssuers(); err != nil {
		return nil, fmt.Errorf("ekCRLs: %w", err)
	}
	return t, nil
}

// ImageSigners loads policy.imageSigners.
func (c *Config) ImageSigners() ([]crypto.PublicKey, error) {
	var signers []crypto.PublicKey
	for _, f := range c.Policy.ImageSigners {
		keys, err := provenance.LoadTrustedRoots(f)
		if err != nil {
			return nil, fmt.Errorf("policy.imageSigners: %w", err)
		}
		signers = append(signers, keys...)
	}
	return signers, nil
}

// loadReferenceValues reads one policy.referenceValues file: a bare
// reference-values document, or, when image signers are configured, the
// reference values inside a runner-image provenance bundle one of them
// signed. Without signers a bundle is refused (its signature would go
// unchecked); with signers a bare file is refused.
func loadReferenceValues(path string, signers []crypto.PublicKey) (*attest.ReferenceValues, error) {
	raw, err := fileio.ReadFile(path, provenance.MaxBundleSize)
	if err != nil {
		return nil, fmt.Errorf("policy.referenceValues: %w", err)
	}
	var probe struct {
		MediaType string `json:"mediaType"`
	}
	isBundle := json.Unmarshal(raw, &probe) == nil && strings.HasPrefix(probe.MediaType, "application/vnd.dev.sigstore.bundle")
	switch {
	case len(signers) == 0 && isBundle:
		return nil, fmt.Errorf("policy.referenceValues: %s is image provenance: configure policy.imageSigners to verify it", path)
	case len(signers) == 0:
		rv, err := attest.ParseReferenceValues(raw)
		if err != nil {
			return nil, fmt.Errorf("policy.referenceValues: %s: %w", path, err)
		}
		return rv, nil
	case !isBundle:
		return nil, fmt.Errorf("policy.referenceValues: %s is not image provenance, and with policy.imageSigners set only signed reference values are accepted", path)
	}
	v, err := provenance.VerifyImage(raw, signers)
	if err != nil {
		return nil, fmt.Errorf("policy.referenceValues: %s: %w", path, err)
	}
	return v.ReferenceValues, nil
}

// snpDigested is what of the SEV-SNP requirements enters the policy digest:
// nothing for the zero value (so that digests of gates without SEV-SNP
// settings are unchanged), the settings otherwise (TrustedRoots are
// AMD's; tests only replace them).
func snpDigested(r attest.SNPRequirements) *attest.SNPRequirements {
	if !r.AllowSMT && r.MinimumTCB == (attest.SNPTCB{}) {
		return nil
	}
	return &attest.SNPRequirements{AllowSMT: r.AllowSMT, MinimumTCB: r.MinimumTCB}
}

// policyDigest names the exact reference values and trust roots applied,
// for environment certificates.
func policyDigest(p *attest.Policy) (string, error) {
	var roots [][]byte
	for _, k := range p.TrustedAKs {
		b, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return "", err
		}
		roots = append(roots, b)
	}
	for _, c := range append(slices.Clone(p.TrustedAKRoots), p.TrustedAKIntermediates...) {
		roots = append(roots, c.Raw)
	}
	slices.SortFunc(roots, bytes.Compare)
	var ekRoots [][]byte
	if p.TrustedEKs != nil {
		for _, c := range append(slices.Clone(p.TrustedEKs.Roots), p.TrustedEKs.Intermediates...) {
			ekRoots = append(ekRoots, c.Raw)
		}
		for _, crl := range p.TrustedEKs.CRLs {
			ekRoots = append(ekRoots, crl.Raw)
		}
	}
	slices.SortFunc(ekRoots, bytes.Compare)
	b, err := json.Marshal(struct {
		Reference *attest.ReferenceValues
		Roots     [][]byte
		Direct    bool
		Software  bool
		EKRoots   [][]byte                `json:",omitempty"`
		SNP       *attest.SNPRequirements `json:",omitempty"`
	}{p.Reference, roots, p.DirectKernelBoot, p.AllowSoftwareTPMUnsafe, ekRoots, snpDigested(p.SNP)})
	if err != nil {
		return "", err
	}
	return attest.Digest(b), nil
}

// readSecretFile reads a key file, refusing one readable by group or others.
func readSecretFile(path string) ([]byte, error) { return fileio.ReadSecretFile(path, 64<<10) }

func readFileLimited(path string, limit int64) ([]byte, error) { return fileio.ReadFile(path, limit) }

// NewGitHubRegistryFromConfig builds the GitHub client the configuration
// describes, reading the App key (which must be mode 0600 or stricter).
func NewGitHubRegistryFromConfig(c *Config, observe func(status int)) (*GitHubRegistry, error) {
	key, err := readSecretFile(c.GitHub.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("github.privateKey: %w", err)
	}
	return NewGitHubRegistry(GitHubOptions{
		APIURL: c.GitHub.APIURL, AppID: c.GitHub.AppID, InstallationID: c.GitHub.InstallationID,
		PrivateKey: key, Org: c.GitHub.Org, Repository: c.GitHub.Repository,
		RunnerGroupID: c.GitHub.RunnerGroupID, WorkFolder: c.GitHub.WorkFolder, Observe: observe,
	})
}

// maxDSNFile bounds store.postgres.dsnFile.
const maxDSNFile = 16 << 10

// PostgresDSN reads the configured DSN (from dsnFile, which must be mode
// 0600 or stricter).
func (p *PostgresConfig) PostgresDSN() (string, error) {
	if p.DSNFile == "" {
		return p.DSN, nil
	}
	b, err := fileio.ReadSecretFile(p.DSNFile, maxDSNFile)
	if err != nil {
		return "", fmt.Errorf("store.postgres.dsnFile: %w", err)
	}
	dsn := strings.TrimSpace(string(b))
	if dsn == "" {
		return "", fmt.Errorf("store.postgres.dsnFile: %s is empty", p.DSNFile)
	}
	return dsn, nil
}

// StoreDescription says which store the configuration selects, for logs
// (never a password).
func (c *Config) StoreDescription() string {
	if c.Store == nil || c.Store.Postgres == nil {
		return "bbolt " + filepath.Join(c.DataDir, "gate.db")
	}
	if c.Store.Postgres.DSNFile != "" {
		return "postgres (dsnFile " + c.Store.Postgres.DSNFile + ")"
	}
	return "postgres " + RedactDSN(c.Store.Postgres.DSN)
}

// OpenStore opens the store the configuration selects: bbolt in
// dataDir/gate.db (created with mode 0700 directories), or PostgreSQL.
func OpenStore(ctx context.Context, c *Config) (Store, error) {
	if c.Store == nil || c.Store.Postgres == nil {
		if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
			return nil, err
		}
		return OpenBoltStore(filepath.Join(c.DataDir, "gate.db"))
	}
	pg := c.Store.Postgres
	dsn, err := pg.PostgresDSN()
	if err != nil {
		return nil, err
	}
	return OpenPostgresStore(ctx, PostgresOptions{DSN: dsn, MaxConns: pg.MaxConns, Timeout: time.Duration(pg.Timeout)})
}
