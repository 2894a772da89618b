package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/internal/fileio"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/fleet"
)

// WebhookPath is where the gate serves the GitHub App's webhook.
const WebhookPath = "/v1/github/webhook"

// maxWebhookSecret bounds the webhook secret file.
const maxWebhookSecret = 4096

// fleetConfig reads the configuration's fleet section (nil without one).
func fleetConfig(cfg *jobgate.Config) (*fleet.Config, error) {
	if !cfg.HasFleet() {
		return nil, nil
	}
	return fleet.ParseConfig(cfg.Fleet, cfg.Dir())
}

// webhookSecret reads fleet.webhookSecret (mode 0600 or stricter; one
// trailing newline is not part of it).
func webhookSecret(fc *fleet.Config) ([]byte, error) {
	if fc == nil {
		return nil, nil
	}
	b, err := fileio.ReadSecretFile(fc.WebhookSecret, maxWebhookSecret)
	if err != nil {
		return nil, fmt.Errorf("fleet.webhookSecret: %w", err)
	}
	return bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r")), nil
}

// poolProvenance lists the pools' image provenance files not already in
// policy.referenceValues, once each: their signed reference values join the
// gate's policy.
func poolProvenance(cfg *jobgate.Config, fc *fleet.Config) []string {
	if fc == nil {
		return nil
	}
	seen := map[string]bool{}
	for _, f := range cfg.Policy.ReferenceValues {
		seen[filepath.Clean(f)] = true
	}
	var out []string
	for _, p := range fc.Pools {
		if f := filepath.Clean(p.Image.Provenance); !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}

// startFleet builds the fleet of a gate whose configuration has one and
// starts its metrics listener. The caller runs it.
func startFleet(ctx context.Context, d *gateDeps, fc *fleet.Config, secret []byte, gate *jobgate.Gate, log *slog.Logger) (*fleet.Fleet, func(), error) {
	signers, err := d.cfg.ImageSigners()
	if err != nil {
		return nil, nil, err
	}
	providers, err := fleet.NewProviders(ctx, fc)
	if err != nil {
		return nil, nil, err
	}
	for name, p := range providers {
		if q, ok := p.(*fleet.QEMU); ok {
			log.Info("fleet pool", "pool", name, "provider", "qemu", "accel", q.Accel())
		}
	}
	f, err := fleet.New(fleet.Options{
		Config: fc, Gate: gate, WebhookSecret: secret, ImageSigners: signers,
		Providers: providers, Deliveries: d.registry, Budget: d.registry, Requests: d.registry.Requests, Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	stop := func() {}
	if fc.MetricsListen != "" {
		ln, err := net.Listen("tcp", fc.MetricsListen)
		if err != nil {
			return nil, nil, fmt.Errorf("fleet.metricsListen: %w", err)
		}
		srv := &http.Server{Handler: f.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		stop = func() { srv.Close() }
		log.Info("fleet metrics", "addr", ln.Addr().String())
	}
	return f, stop, nil
}

const fleetUsage = `Usage: jobgate fleet status --config FILE [--json]

Print the running gate's fleet: per pool, its VMs by state (launching,
admitted, busy, done), queued and running jobs, and the GitHub requests the
gate has made. Read from the gate's admin socket.
`

func runFleet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "status" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, fleetUsage)
			return nil
		}
		return cli.Usagef("fleet: want \"fleet status\"\n%s", fleetUsage)
	}
	var asJSON bool
	path, err := configFlag("fleet status", fleetUsage, args[1:], stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	})
	if err != nil {
		return err
	}
	cfg, err := jobgate.LoadConfig(path)
	if err != nil {
		return err
	}
	if !cfg.HasFleet() {
		return errors.New("fleet status: the configuration has no fleet section")
	}
	var buf strings.Builder
	if err := adminGet(ctx, cfg.AdminSocketPath(), "/fleet/status", &buf); err != nil {
		return err
	}
	if asJSON {
		_, err := io.WriteString(stdout, buf.String())
		return err
	}
	var st fleet.Status
	if err := json.Unmarshal([]byte(buf.String()), &st); err != nil {
		return fmt.Errorf("fleet status: %w", err)
	}
	printStatus(stdout, &st)
	return nil
}

func printStatus(w io.Writer, st *fleet.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tPROVIDER\tLAUNCHING\tIDLE\tBUSY\tDONE\tQUEUED JOBS\tRUNNING JOBS\tMIN IDLE\tMAX")
	for _, p := range st.Pools {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", p.Name, p.Provider, p.VMs[string(jobgate.VMLaunching)],
			p.VMs[string(jobgate.VMAdmitted)], p.VMs[string(jobgate.VMBusy)], p.VMs[string(jobgate.VMDone)], p.Queued, p.Running, p.MinIdle, p.MaxTotal)
	}
	tw.Flush()
	var vms []fleet.VMStatus
	for _, p := range st.Pools {
		vms = append(vms, p.List...)
	}
	if len(vms) > 0 {
		sort.Slice(vms, func(i, j int) bool { return vms[i].Name < vms[j].Name })
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VM\tSTATE\tRUNNER\tJOB\tIMAGE\tSINCE")
		for _, v := range vms {
			job := ""
			if v.JobID != 0 {
				job = fmt.Sprint(v.JobID)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.State, v.Runner, job, v.Image, v.Since.Format(time.RFC3339))
		}
		tw.Flush()
	}
	if r := st.GitHubRequests; r != nil {
		fmt.Fprintf(w, "\nGitHub requests since start: %d with the installation token, %d as the App\n", r.Installation, r.App)
	}
}

// fleetAdmin serves GET /fleet/status on the admin socket.
func fleetAdmin(f *fleet.Fleet) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := f.Status(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	})
}

const relayUsage = `Usage: jobgate stdio-relay HOST:PORT

Copy stdin to a TCP connection to HOST:PORT and the connection to stdout: the
relay QEMU's guestfwd runs (qemu.relay) when socat is not installed.
`

func runStdioRelay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("stdio-relay", relayUsage, stderr)
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return cli.Usagef("stdio-relay: want one HOST:PORT")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", pos[0])
	if err != nil {
		return err
	}
	defer conn.Close()
	done := make(chan error, 2)
	go func() {
		_, err := io.Copy(conn, os.Stdin)
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- err
	}()
	go func() {
		_, err := io.Copy(stdout, conn)
		done <- err
	}()
	select {
	case <-ctx.Done():
		return nil
	case err := <-done:
		if err != nil {
			return err
		}
		return <-done
	}
}
