// Command jobgate is the attested-runner control plane: it verifies
// environment evidence, and only then mints single-use GitHub runners whose
// configuration it seals to the attested environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/internal/version"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/fleet"
)

const usage = `jobgate: the attested-runner gate. It is the only holder of GitHub credentials:
a runner VM gets a single-use runner configuration only after its hardware
evidence verifies against the gate's reference values.

Usage:
  jobgate serve --config FILE         serve the gate API and reconcile runners
  jobgate check-github --config FILE  check the GitHub App credentials, installation
                                      and permissions without minting anything
  jobgate audit verify --config FILE  check the audit log's hash chain
  jobgate audit show --config FILE    print the audit log (JSON lines)
  jobgate keygen --out FILE           create the gate's signing key (mode 0600)
                                      and print its public key
  jobgate fleet status --config FILE  print the fleet's pools, VMs and jobs
  jobgate store migrate --from bbolt:PATH --to postgres:DSN|postgres:@DSNFILE
                                      copy a stopped gate's embedded store into an
                                      empty PostgreSQL database (a replicated gate)
  jobgate stdio-relay HOST:PORT       the QEMU guestfwd relay (without socat)
  jobgate version

The configuration file is documented in the README ("Gate configuration").
API: POST /v1/challenge, POST /v1/admit, POST /v1/deregister, GET /v1/roots,
GET /healthz, /readyz, /metrics; with a fleet, POST /v1/github/webhook.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cli.Main(ctx, "jobgate", usage, version.String("jobgate"), map[string]cli.Command{
		"serve":        runServe,
		"check-github": runCheckGitHub,
		"audit":        runAudit,
		"keygen":       runKeygen,
		"fleet":        runFleet,
		"store":        runStore,
		"stdio-relay":  runStdioRelay,
	}, args, stdout, stderr)
}

func configFlag(name, help string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (string, error) {
	fs := cli.NewFlagSet(name, help, stderr)
	path := fs.String("config", "", "gate configuration file (JSON)")
	if extra != nil {
		extra(fs)
	}
	pos, err := cli.Parse(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", err
		}
		return "", cli.Usagef("%v", err)
	}
	if len(pos) > 0 {
		return "", cli.Usagef("%s: unexpected argument %q", name, pos[0])
	}
	if *path == "" {
		return "", cli.Usagef("%s: --config is required", name)
	}
	return *path, nil
}

const serveUsage = `Usage: jobgate serve --config FILE [--log-format text|json]

Serve the gate API and run the reconcile loop until SIGINT/SIGTERM. Refuses to
start without reference values, without an AK trust root, or with a signing
key or App key readable by others.
`

// gateDeps is everything serve and the other commands build from a config.
type gateDeps struct {
	cfg      *jobgate.Config
	store    jobgate.Store
	registry *jobgate.GitHubRegistry
}

func openDeps(path string, observe func(int)) (*gateDeps, error) {
	cfg, err := jobgate.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	d := &gateDeps{cfg: cfg}
	d.registry, err = jobgate.NewGitHubRegistryFromConfig(cfg, observe)
	if err != nil {
		return nil, err
	}
	return d, nil
}

func (d *gateDeps) openStore(ctx context.Context) error {
	if err := os.MkdirAll(d.cfg.DataDir, 0o700); err != nil {
		return err
	}
	var err error
	d.store, err = jobgate.OpenStore(ctx, d.cfg)
	return err
}

func runServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	var logFormat string
	path, err := configFlag("serve", serveUsage, args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	})
	if err != nil {
		return err
	}
	var h slog.Handler = slog.NewTextHandler(stderr, nil)
	if logFormat == "json" {
		h = slog.NewJSONHandler(stderr, nil)
	}
	log := slog.New(h)

	var gate *jobgate.Gate
	d, err := openDeps(path, func(s int) {
		if gate != nil {
			gate.ObserveGitHub(s)
		}
	})
	if err != nil {
		return err
	}
	fc, err := fleetConfig(d.cfg)
	if err != nil {
		return err
	}
	secret, err := webhookSecret(fc)
	if err != nil {
		return err
	}
	policy, digest, err := d.cfg.LoadPolicy(poolProvenance(d.cfg, fc)...)
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	signer, err := jobgate.LoadSigningKey(d.cfg.SigningKey)
	if err != nil {
		return err
	}
	if err := d.openStore(ctx); err != nil {
		return err
	}
	defer d.store.Close()
	gate, err = jobgate.New(jobgate.Options{
		Config: d.cfg, Store: d.store, Registry: d.registry, Policy: policy, PolicyDigest: digest,
		Signer: signer, Logger: log,
	})
	if err != nil {
		return err
	}
	handler, adminHandler := gate.Handler(), gate.AdminHandler()
	var fl *fleet.Fleet
	if fc != nil {
		var stopMetrics func()
		if fl, stopMetrics, err = startFleet(ctx, d, fc, secret, gate, log); err != nil {
			return err
		}
		defer stopMetrics()
		mux := http.NewServeMux()
		mux.Handle("POST "+WebhookPath, fl.WebhookHandler())
		mux.Handle("/", handler)
		handler = mux
		amux := http.NewServeMux()
		amux.Handle("GET /fleet/status", fleetAdmin(fl))
		amux.Handle("/", adminHandler)
		adminHandler = amux
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      90 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
	}
	ln, err := net.Listen("tcp", d.cfg.Listen)
	if err != nil {
		return err
	}
	log.Info("jobgate serving", "addr", ln.Addr().String(), "gate", d.cfg.GateID, "store", d.cfg.StoreDescription(), "images", len(policy.Reference.Images),
		"policy", digest[:16], "tls", d.cfg.TLS != nil, "version", version.String("jobgate"))
	errc := make(chan error, 2)
	go func() {
		if d.cfg.TLS != nil {
			errc <- srv.ServeTLS(ln, d.cfg.TLS.Cert, d.cfg.TLS.Key)
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	// The reconcile loops: at shutdown they finish the iteration they are
	// in, so an action already taken on GitHub is recorded before the
	// store closes.
	loopCtx, stopLoops := context.WithCancel(ctx)
	defer stopLoops()
	var loops sync.WaitGroup
	loops.Add(1)
	go func() { defer loops.Done(); errc <- gate.Run(loopCtx) }()
	if fl != nil {
		loops.Add(1)
		go func() { defer loops.Done(); fl.Run(loopCtx) }()
	}
	admin, err := listenAdmin(d.cfg.AdminSocketPath())
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	adminSrv := &http.Server{Handler: adminHandler, ReadHeaderTimeout: 10 * time.Second}
	go adminSrv.Serve(admin)
	defer adminSrv.Close()
	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	log.Info("jobgate shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	stopLoops()
	done := make(chan struct{})
	go func() { loops.Wait(); close(done) }()
	select {
	case <-done:
	case <-sctx.Done():
		log.Warn("reconcile loops still running at the shutdown deadline")
	}
	return err
}

const checkUsage = `Usage: jobgate check-github --config FILE

Check, without minting anything, that the GitHub App in the configuration
can do what the gate needs: App credentials (JWT), the installation on the
configured org or repository, the permission ("Self-hosted runners: write"
for an org, "Administration: write" for a repository), and listing runners.
Exit 0 only if every check passes.
`

func runCheckGitHub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	path, err := configFlag("check-github", checkUsage, args, stderr, nil)
	if err != nil {
		return err
	}
	d, err := openDeps(path, nil)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	failed := false
	for _, r := range d.registry.Check(cctx) {
		mark := "✓"
		if !r.OK {
			mark, failed = "✗", true
		}
		fmt.Fprintf(stdout, "%s %-16s %s\n", mark, r.Name, r.Detail)
	}
	if failed {
		return errors.New("GitHub App check failed")
	}
	return nil
}

const auditUsage = `Usage: jobgate audit verify|show --config FILE

verify: walk the audit log and check its hash chain (every record names the
hash of the one before; an edited, removed or reordered record breaks it),
then print the record count and head hash. Compare the head with one you
exported earlier to detect truncation.
show: print every record as a JSON line.

While the gate runs it holds the embedded store's lock; the command then
asks the running gate through its admin socket (<dataDir>/admin.sock, mode
0600). With a PostgreSQL store it reads the database (the one chain of
every replica), running gates or not.
`

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "verify" && args[0] != "show") {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
			fmt.Fprint(stdout, auditUsage)
			return nil
		}
		return cli.Usagef("audit: want 'verify' or 'show'\n%s", auditUsage)
	}
	path, err := configFlag("audit "+args[0], auditUsage, args[1:], stderr, nil)
	if err != nil {
		return err
	}
	cfg, err := jobgate.LoadConfig(path)
	if err != nil {
		return err
	}
	if cfg.Store != nil {
		store, err := jobgate.OpenStore(ctx, cfg)
		if err != nil {
			return err
		}
		defer store.Close()
		return auditOf(ctx, args[0], store, stdout)
	}
	if _, err := os.Stat(cfg.AdminSocketPath()); err == nil {
		what := "/audit"
		if args[0] == "verify" {
			what = "/audit/verify"
		}
		err := adminGet(ctx, cfg.AdminSocketPath(), what, stdout)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return err
		}
		// A socket left behind by a gate that is gone: read the store.
	}
	store, err := jobgate.OpenBoltStore(filepath.Join(cfg.DataDir, "gate.db"))
	if err != nil {
		return err
	}
	defer store.Close()
	return auditOf(ctx, args[0], store, stdout)
}

func auditOf(ctx context.Context, what string, store jobgate.Store, stdout io.Writer) error {
	if what == "show" {
		return jobgate.WriteAuditJSONL(ctx, store, stdout)
	}
	n, head, err := jobgate.VerifyAudit(ctx, store)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "audit log OK: %d records, head %s\n", n, head)
	return nil
}

const keygenUsage = `Usage: jobgate keygen --out FILE

Create a signing key: ECDSA P-256, PKCS#8 PEM, mode 0600. Refuses to
overwrite. Prints the public key.

The gate's environment-certificate key: give the public key to consumers as
their --gate-key (the gate also serves it at GET /v1/roots).
An image builder's key (scripts/image/refvalues --sign-key): list the public
key in the gate's policy.imageSigners.
`

func runKeygen(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("keygen", keygenUsage, stderr)
	out := fs.String("out", "", "where to write the private key")
	if _, err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return cli.Usagef("%v", err)
	}
	if *out == "" {
		return cli.Usagef("keygen: --out is required")
	}
	pub, err := jobgate.GenerateSigningKey(*out)
	if err != nil {
		return err
	}
	_, err = stdout.Write(pub)
	return err
}

// listenAdmin opens the admin socket, readable and writable by this user
// only.
func listenAdmin(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// adminGet reads one admin endpoint of the running gate.
func adminGet(ctx context.Context, socket, path string, out io.Writer) error {
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://jobgate"+path, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", socket, err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(out, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("audit: %s", resp.Status)
	}
	return nil
}
