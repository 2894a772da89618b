package main

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/internal/version"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/runner"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/google/go-tpm/legacy/tpm2"
)

const runUsage = `Usage: attested-runner run --gate URL [flags]

The agent's whole life: attest -> admission -> one job -> teardown -> power off.
It exits 0 after a completed job, 1 otherwise (after tearing down either way).

TPM selection (--tpm):
  /dev/tpmrm0        the platform's TPM resource manager (default)
  unix:/path/sock    a swtpm socket: a SOFTWARE TPM, evidence is labelled so
                     and only gates that allow software TPMs admit it
  simulator          the in-process go-tpm-tools simulator (builds with cgo
                     and the 'simulator' tag only; demos and tests)
With --tdx the agent uses the TDX guest interface instead of a TPM.
With --sev-snp (a vTPM in an AMD SEV-SNP confidential VM) every TPM quote
also carries an SEV-SNP report binding it: what makes level 3 on such VMs;
a VCEK the host does not supply is fetched from AMD's KDS (--snp-kds).
With --azure-cvm (an Azure SEV-SNP confidential VM) the agent attests with
Azure's vTPM AK and sends the HCL report from NV 0x01400001, whose SEV-SNP
report names that AK, with the VCEK from the instance metadata service:
level 3 there. With --tdx-vtpm (a vTPM in an Intel TDX confidential VM,
Compute Engine's shape) every TPM quote also carries a TDX quote binding
it and its AK: level 3 when Intel rates the platform's TCB UpToDate.
`

type agentFlags struct {
	gate, gateCA, gateKeys, runnerDir, runnerUser, labels, tpm, eventLog, socket, stateDir, poweroff, logFormat, vmID, azureIMDS string
	tdx, tdxVTPM, sevSNP, snpKDS, insecureDiskRunnerDir, insecurePlainHTTP, ekActivation, azureAK, azureCVM                      bool
	idleTTL, admissionDeadline, jobTimeout, teardownDeadline                                                                     time.Duration
}

func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f agentFlags
	fs := cli.NewFlagSet("run", runUsage, stderr)
	fs.StringVar(&f.gate, "gate", "", "gate base URL, e.g. https://gate.example.com (required)")
	fs.StringVar(&f.gateCA, "gate-ca", "", "PEM CA bundle for the gate's TLS certificate (default: system roots)")
	fs.StringVar(&f.gateKeys, "gate-key", "/etc/attested-runner/gate-keys.pem", "PEM public keys of the gate (jobgate keygen's output), pinned in the image: the admission answer and the environment certificate must be signed by one")
	fs.BoolVar(&f.insecurePlainHTTP, "insecure-allow-plain-http-gate", false, "allow an http:// gate URL that is not loopback (tests under QEMU only: without TLS anyone on the path sees the agent's traffic)")
	fs.StringVar(&f.runnerDir, "runner-dir", "/opt/actions-runner", "GitHub runner directory (bin/Runner.Listener)")
	fs.StringVar(&f.runnerUser, "runner-user", "runner", "unprivileged user the runner and the job run as: a name, or uid:gid")
	fs.BoolVar(&f.insecureDiskRunnerDir, "insecure-allow-runner-dir-on-disk", false, "allow a runner directory on a persistent filesystem (the runner writes its JIT credentials there): local demos and tests only")
	fs.StringVar(&f.labels, "labels", "", "extra runner labels to ask the gate for, comma-separated")
	fs.BoolVar(&f.azureAK, "azure-ak", false, "attest with Azure's vTPM AK (persistent 0x81000003) and send its certificate from NV 0x01C101D0 (trusted launch and confidential VMs)")
	fs.BoolVar(&f.azureCVM, "azure-cvm", false, "an Azure SEV-SNP confidential VM: --azure-ak, plus the HCL report (NV 0x01400001) binding that AK and the VCEK from the instance metadata service with every quote; the gate's image must list the VM's snpMeasurements")
	fs.StringVar(&f.azureIMDS, "azure-imds", attest.AzureIMDS, "base URL of Azure's instance metadata service, asked for the VCEK with --azure-cvm")
	fs.BoolVar(&f.ekActivation, "ek-activation", false, "prove the attestation key to the gate by EK credential activation (the TPM's EK certificate in NV; no AK enrolled by hand)")
	fs.StringVar(&f.vmID, "vm-id", "auto", "the fleet VM this agent runs in, told to the gate: auto (QEMU fw_cfg opt/attested-runner/vm, else Compute Engine's instance name, else none), none, or a name")
	fs.StringVar(&f.tpm, "tpm", "/dev/tpmrm0", "TPM: a device path, unix:/path/to/swtpm.sock, or simulator")
	fs.BoolVar(&f.tdx, "tdx", false, "use the Intel TDX guest interface instead of a TPM")
	fs.BoolVar(&f.tdxVTPM, "tdx-vtpm", false, "add an Intel TDX quote (configfs-tsm or /dev/tdx_guest) binding each TPM quote and its AK: a vTPM in a TDX VM; the gate's image must list the VM's tdxMrtds")
	fs.BoolVar(&f.sevSNP, "sev-snp", false, "add an AMD SEV-SNP report (configfs-tsm or /dev/sev-guest) binding each TPM quote and its AK: a vTPM in an SEV-SNP VM; the gate's image must list the VM's snpMeasurements")
	fs.BoolVar(&f.snpKDS, "snp-kds", true, "with --sev-snp, fetch the VCEK from AMD's KDS (kdsintf.amd.com) when the host supplies none with the report; false: such a host fails collection")
	fs.StringVar(&f.eventLog, "event-log", "", "TCG event log file (default: /sys/kernel/security/tpm0/binary_bios_measurements)")
	fs.StringVar(&f.socket, "socket", "/run/attested-runner/agent.sock", "agent socket for the job hooks and the job-side action")
	fs.StringVar(&f.stateDir, "state-dir", "/run/attested-runner", "directory for hook scripts and the dispatch attestation")
	fs.StringVar(&f.poweroff, "poweroff-command", "systemctl poweroff", "command that powers the VM off at teardown; 'reboot-syscall' calls reboot(2) (for an agent running as init)")
	fs.DurationVar(&f.idleTTL, "idle-ttl", 15*time.Minute, "tear down if no job starts within this time")
	fs.DurationVar(&f.admissionDeadline, "admission-deadline", 10*time.Minute, "give up and power off if not admitted within this time")
	fs.DurationVar(&f.jobTimeout, "job-timeout", 6*time.Hour, "tear down a job running longer than this")
	fs.DurationVar(&f.teardownDeadline, "teardown-deadline", 2*time.Minute, "how long teardown retries deregistration")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	if pos, err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return cli.Usagef("%v", err)
	} else if len(pos) > 0 {
		return cli.Usagef("run: unexpected argument %q", pos[0])
	}
	if f.gate == "" {
		return cli.Usagef("run: --gate is required")
	}
	if f.sevSNP && f.tdx {
		return cli.Usagef("run: --sev-snp adds a report to TPM quotes; it does not go with --tdx")
	}
	if f.azureCVM && (f.tdx || f.sevSNP) {
		return cli.Usagef("run: --azure-cvm attests through Azure's vTPM and HCL report; it does not go with --tdx or --sev-snp")
	}
	if f.tdxVTPM && (f.tdx || f.sevSNP || f.azureCVM) {
		return cli.Usagef("run: --tdx-vtpm adds a TDX quote to TPM quotes; it does not go with --tdx, --sev-snp or --azure-cvm")
	}
	if err := checkGateURL(f.gate, f.insecurePlainHTTP); err != nil {
		return err
	}
	gateKeys, err := loadGateKeys(f.gateKeys)
	if err != nil {
		return err
	}
	var h slog.Handler = slog.NewTextHandler(stderr, nil)
	if f.logFormat == "json" {
		h = slog.NewJSONHandler(stderr, nil)
	}
	log := slog.New(h)

	self, err := os.Executable()
	if err != nil {
		return err
	}
	d, err := provenance.DigestFile(self)
	if err != nil {
		return fmt.Errorf("hashing the agent binary: %w", err)
	}
	var digest [sha256.Size]byte
	copy(digest[:], d)
	uid, gid, err := lookupUser(f.runnerUser)
	if err != nil {
		return err
	}
	httpClient, err := gateHTTPClient(f.gateCA)
	if err != nil {
		return err
	}
	collector, closeDev, err := openCollector(ctx, f)
	if err != nil {
		return err
	}
	defer closeDev()
	powerOff, err := powerOffFunc(f.poweroff, log)
	if err != nil {
		return err
	}
	vmID, err := resolveVMID(f.vmID)
	if err != nil {
		return err
	}
	var labels []string
	for _, l := range strings.Split(f.labels, ",") {
		if l = strings.TrimSpace(l); l != "" {
			labels = append(labels, l)
		}
	}
	a, err := runner.New(runner.Config{
		Gate: &gateapi.Client{BaseURL: f.gate, HTTP: httpClient}, GateKeys: gateKeys, Collector: collector,
		AgentDigest: digest, AgentVersion: version.String("attested-runner"), AgentPath: self,
		RunnerDir: f.runnerDir, RunnerUID: uid, RunnerGID: gid, Labels: labels, VMID: vmID,
		SocketPath: f.socket, StateDir: f.stateDir, EKActivation: f.ekActivation,
		AdmissionDeadline: f.admissionDeadline, IdleTTL: f.idleTTL, JobTimeout: f.jobTimeout, TeardownDeadline: f.teardownDeadline,
		PowerOff: powerOff, Log: log, AllowRunnerDirOnDiskInsecure: f.insecureDiskRunnerDir,
	})
	if err != nil {
		return err
	}
	log.Info("attested-runner starting", "version", version.String("attested-runner"), "agent_sha256", fmt.Sprintf("%x", digest),
		"gate", f.gate, "tpm", f.tpm, "tdx", f.tdx, "tdx_vtpm", f.tdxVTPM, "sev_snp", f.sevSNP, "azure_cvm", f.azureCVM, "runner_user", f.runnerUser, "vm", vmID)
	out := a.Run(ctx)
	fmt.Fprintf(stdout, "attested-runner: %s (admitted %v, job %v, deregistered %v)\n", out.Reason, out.Admitted, out.JobStarted, out.Deregistered)
	if out.Err != nil {
		return out.Err
	}
	if out.Reason != "job completed" {
		return errors.New(out.Reason)
	}
	return nil
}

// fwCfgVMID is where QEMU's -fw_cfg name=opt/attested-runner/vm,string=NAME
// appears in the guest (the qemu_fw_cfg module).
const fwCfgVMID = "/sys/firmware/qemu_fw_cfg/by_name/opt/attested-runner/vm/raw"

var vmIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// resolveVMID finds the name of the fleet VM the agent runs in. It is not
// a secret and not a proof: the gate's fleet checks it against the VM it
// launched (and that VM's TPM).
func resolveVMID(spec string) (string, error) {
	id := spec
	switch spec {
	case "none":
		return "", nil
	case "auto":
		id = ""
		if b, err := cli.ReadFile(fwCfgVMID, 256); err == nil {
			id = strings.TrimSpace(string(b))
		} else if b, err := cli.ReadFile("/sys/class/dmi/id/product_name", 256); err == nil && strings.TrimSpace(string(b)) == "Google Compute Engine" {
			id, err = gceInstanceName()
			if err != nil {
				return "", fmt.Errorf("--vm-id auto: %w", err)
			}
		}
		if id == "" {
			return "", nil
		}
	}
	if !vmIDPattern.MatchString(id) {
		return "", cli.Usagef("--vm-id %q: want a VM name of letters, digits, '.', '_', '-'", id)
	}
	return id, nil
}

// gceInstanceName asks Compute Engine's metadata server for the instance name.
func gceInstanceName() (string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://169.254.169.254/computeMetadata/v1/instance/name", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Metadata-Flavor", "Google")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return "", fmt.Errorf("instance name from the metadata server: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("instance name from the metadata server: %s %v", resp.Status, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// checkGateURL refuses a gate URL the agent cannot talk to safely: https,
// or http to a loopback address; plain http elsewhere only with the named
// insecure flag.
func checkGateURL(raw string, allowPlainHTTP bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return cli.Usagef("--gate %q: want https://HOST[:PORT]", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if allowPlainHTTP || isLoopback(u.Hostname()) {
			return nil
		}
		return cli.Usagef("--gate %s is plain http to a host that is not loopback: use https (or, for a test VM only, --insecure-allow-plain-http-gate)", raw)
	}
	return cli.Usagef("--gate %q: scheme %q, want https", raw, u.Scheme)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loadGateKeys reads the pinned gate keys: PEM public keys, at least one.
func loadGateKeys(path string) ([]crypto.PublicKey, error) {
	b, err := cli.ReadFile(path, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("--gate-key: %w (the gate's public key, from jobgate keygen, must be pinned in the image)", err)
	}
	keys, err := provenance.ParseTrustedRoots(b)
	if err != nil {
		return nil, fmt.Errorf("--gate-key %s: %w", path, err)
	}
	return keys, nil
}

func lookupUser(name string) (int, int, error) {
	if u, g, ok := strings.Cut(name, ":"); ok {
		uid, err1 := strconv.Atoi(u)
		gid, err2 := strconv.Atoi(g)
		if err1 != nil || err2 != nil || uid < 0 || gid < 0 {
			return 0, 0, cli.Usagef("--runner-user %q: want a user name or numeric uid:gid", name)
		}
		return uid, gid, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, fmt.Errorf("runner user %q: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return 0, 0, err
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return 0, 0, err
	}
	return uid, gid, nil
}

func gateHTTPClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--gate-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--gate-ca %s: no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}, nil
}

// openCollector opens the attestation device the flags name.
func openCollector(ctx context.Context, f agentFlags) (attest.Collector, func(), error) {
	if f.tdx {
		c, err := attest.NewTDXCollector(attest.TDXOptions{})
		return c, func() {}, err
	}
	opts := attest.TPMOptions{}
	if f.sevSNP {
		qp, err := attest.SNPQuoteProvider()
		if err != nil {
			return nil, nil, fmt.Errorf("--sev-snp: %w", err)
		}
		opts.SNP = qp
		if f.snpKDS {
			opts.SNPKDS = trust.DefaultHTTPSGetter()
		}
	}
	if f.tdxVTPM {
		q, err := attest.TDXHardwareQuote()
		if err != nil {
			return nil, nil, fmt.Errorf("--tdx-vtpm: %w", err)
		}
		opts.TDX = q
	}
	if f.azureAK || f.azureCVM {
		opts.AKHandle, opts.AKCertNVIndex = attest.AzureAKHandle, attest.AzureAKCertNVIndex
	}
	if f.azureCVM {
		vcek, err := attest.FetchAzureVCEK(ctx, &http.Client{Timeout: 30 * time.Second}, f.azureIMDS)
		if err != nil {
			return nil, nil, fmt.Errorf("--azure-cvm: %w", err)
		}
		opts.AzureVCEK = vcek
	}
	if f.eventLog != "" {
		path := f.eventLog
		opts.EventLog = func() ([]byte, error) { return os.ReadFile(path) }
	}
	var rw io.ReadWriteCloser
	var err error
	switch {
	case f.tpm == "simulator":
		rw, err = openSimulator()
		opts.SoftwareTPM = true
	case strings.HasPrefix(f.tpm, "unix:"):
		rw, err = net.Dial("unix", strings.TrimPrefix(f.tpm, "unix:"))
		opts.SoftwareTPM = true
	default:
		rw, err = tpm2.OpenTPM(f.tpm)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("opening TPM %s: %w", f.tpm, err)
	}
	c, err := attest.NewTPMCollector(rw, opts)
	if err != nil {
		rw.Close()
		if f.azureCVM {
			err = fmt.Errorf("--azure-cvm: %w", err)
		}
		return nil, nil, err
	}
	return c, func() { rw.Close() }, nil
}

// powerOffFunc builds the teardown's last step.
func powerOffFunc(spec string, log *slog.Logger) (func(context.Context) error, error) {
	if spec == "reboot-syscall" {
		return func(context.Context) error {
			syscall.Sync()
			return syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
		}, nil
	}
	argv := strings.Fields(spec)
	if len(argv) == 0 {
		return nil, cli.Usagef("--poweroff-command is empty: a VM that never powers off outlives its job")
	}
	return func(ctx context.Context) error {
		log.Info("powering off", "command", spec)
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %w: %s", spec, err, strings.TrimSpace(string(out)))
		}
		return nil
	}, nil
}

const akUsage = `Usage: attested-runner ak-public [--tpm DEV]

Print the SubjectPublicKeyInfo (PEM) of this TPM's attestation key: the GCE
AK if provisioned, otherwise the standard ECC AK derived from the TPM's
endorsement seed (stable for the TPM, nothing is persisted). Add it to the
gate's policy.trustedAKs to enroll the machine.
`

func runAKPublic(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("ak-public", akUsage, stderr)
	tpm := fs.String("tpm", "/dev/tpmrm0", "TPM: a device path, unix:/path/to/swtpm.sock, or simulator")
	if _, err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return cli.Usagef("%v", err)
	}
	var rw io.ReadWriteCloser
	var err error
	switch {
	case *tpm == "simulator":
		rw, err = openSimulator()
	case strings.HasPrefix(*tpm, "unix:"):
		rw, err = net.Dial("unix", strings.TrimPrefix(*tpm, "unix:"))
	default:
		rw, err = tpm2.OpenTPM(*tpm)
	}
	if err != nil {
		return fmt.Errorf("opening TPM %s: %w", *tpm, err)
	}
	defer rw.Close()
	spki, err := attest.AKPublic(rw)
	if err != nil {
		return err
	}
	return writePEM(stdout, "PUBLIC KEY", spki)
}
