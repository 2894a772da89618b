package fleet

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	compute "google.golang.org/api/compute/v1"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	"google.golang.org/api/option/internaloption"
	htransport "google.golang.org/api/transport/http"
)

// Labels and metadata the gce provider puts on every instance. List finds
// a pool's VMs by the pool label; Destroy deletes only instances that carry
// it.
const (
	gcePoolLabel   = "attested-runner-pool"
	gceFleetLabel  = "attested-runner"
	gceVMMetadata  = "attested-runner-vm"
	gceFleetMarker = "fleet"
)

// Bounds on what the gce provider reads from Compute Engine.
const (
	// maxGCEResponse bounds every response body the client library
	// decodes (a page of 500 instances is well under 4 MiB).
	maxGCEResponse = 16 << 20
	// maxGCEErrorResponse bounds the body of an error response.
	maxGCEErrorResponse = 64 << 10
	// maxGCEDescription bounds the image description searched for the UKI
	// digest (Compute Engine itself allows far less).
	maxGCEDescription = 64 << 10
	// maxGCEKeyPEM bounds the PEM of the vTPM's attestation key.
	maxGCEKeyPEM = 16 << 10
	// maxGCEListPages bounds List's paging (500 instances a page).
	maxGCEListPages = 100
	// maxGCEErrorText bounds the text of an API error kept in an error
	// message (they reach VM records and audit records).
	maxGCEErrorText = 1024
)

// ukiDigest is how an image description names its UKI
// (scripts/image/gce-image.sh writes "uki-sha256:HEX").
var ukiDigest = regexp.MustCompile(`uki-sha256:([0-9a-fA-F]{64})\b`)

// GCE is the Compute Engine Provider of one pool: each VM is a Shielded,
// confidential (TDX or SEV-SNP) instance booting the pool's GCE image, and
// the gate trusts the attestation key Compute Engine reports for that
// instance's vTPM, for that VM only. See GCEConfig for what has and has
// not been tested.
type GCE struct {
	cfg          *GCEConfig
	pool         string
	svc          *compute.Service
	imageProject string
	imageName    string

	// callTimeout bounds each API call (ZoneOperations.Wait holds a call
	// open for up to two minutes); opTimeout bounds waiting for one
	// operation; pollInterval spaces Wait calls that return early.
	callTimeout  time.Duration
	opTimeout    time.Duration
	pollInterval time.Duration
}

var _ Provider = (*GCE)(nil)

// NewGCE checks the configuration and returns the provider of pool. The
// client authenticates with cfg.CredentialsFile or Application Default
// Credentials, with the compute scope only; opts (tests: WithEndpoint,
// WithoutAuthentication, WithHTTPClient) come last and override it. It
// makes no API call.
func NewGCE(ctx context.Context, pool string, cfg *GCEConfig, opts ...option.ClientOption) (*GCE, error) {
	if !poolName.MatchString(pool) {
		return nil, fmt.Errorf("gce provider: pool name %q is not a valid label value", pool)
	}
	if cfg == nil {
		return nil, errors.New("gce provider: no configuration")
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("gce provider: %w", err)
	}
	var own []option.ClientOption
	if cfg.Endpoint != "" {
		own = append(own, option.WithEndpoint(cfg.Endpoint))
	}
	if cfg.CredentialsFile != "" {
		own = append(own, option.WithAuthCredentialsFile(option.ServiceAccount, cfg.CredentialsFile))
	}
	all := append(own, opts...)
	// The client library decodes response bodies without a limit, so the
	// provider makes the HTTP client itself, as compute.NewService would
	// (same scopes, endpoints and auth library), and bounds its bodies.
	hc, _, err := htransport.NewClient(ctx, append([]option.ClientOption{
		option.WithScopes(compute.ComputeScope),
		internaloption.WithDefaultEndpointTemplate("https://compute.UNIVERSE_DOMAIN/compute/v1/"),
		internaloption.WithDefaultMTLSEndpoint("https://compute.mtls.googleapis.com/compute/v1/"),
		internaloption.EnableNewAuthLibrary(),
	}, all...)...)
	if err != nil {
		return nil, fmt.Errorf("gce provider: HTTP client: %w", err)
	}
	bounded := *hc
	bounded.Transport = boundedBodies{base: hc.Transport}
	svc, err := compute.NewService(ctx, append(all, option.WithHTTPClient(&bounded))...)
	if err != nil {
		return nil, fmt.Errorf("gce provider: %w", err)
	}
	m := gceImage.FindStringSubmatch(cfg.Image)
	return &GCE{
		cfg: cfg, pool: pool, svc: svc, imageProject: m[1], imageName: m[2],
		callTimeout: 3 * time.Minute, opTimeout: 10 * time.Minute, pollInterval: 2 * time.Second,
	}, nil
}

// Kind implements Provider.
func (g *GCE) Kind() string { return "gce" }

// Launch implements Provider. In order:
//
//  1. The configured image's description must name, as uki-sha256:HEX, the
//     SHA-256 of req.Boot.Files["uki.efi"] (the bytes the fleet verified
//     against the signed provenance) and the image must be READY; otherwise
//     ErrImageRefused and nothing is created.
//  2. Instances.Insert of req.Name: the image as an auto-deleted boot disk,
//     Shielded VM (vTPM, integrity monitoring, Secure Boot), the configured
//     confidential type, no live migration or automatic restart, the pool
//     and fleet labels and the VM's name in metadata.
//  3. The zone operation is waited for; one that ends with errors fails the
//     launch (*OperationError).
//  4. The vTPM's attestation key, as Instances.GetShieldedInstanceIdentity
//     reports it, becomes Launched.AK.
//
// If step 3 or 4 fails the instance is deleted before Launch returns. The
// check in step 1 and the insert are two calls: an image replaced in
// between by someone who can write images in that project is not caught
// here, but at admission, where the VM's measured boot must match the
// reference values of the signed provenance. An insert whose answer is
// lost (a timeout, a 5xx) may still create the instance: the fleet
// destroys the VM of every failed launch, and reconcile deletes any pool
// instance it has no record of.
func (g *GCE) Launch(ctx context.Context, req *LaunchRequest) (*Launched, error) {
	if !gceName.MatchString(req.Name) {
		return nil, fmt.Errorf("gce: VM name %q is not a Compute Engine instance name", req.Name)
	}
	if req.Boot == nil || req.Boot.Boot != "uki" || len(req.Boot.Files["uki.efi"]) == 0 {
		return nil, fmt.Errorf("%w: gce VMs boot the verified uki.efi, which the launch request lacks", ErrImageRefused)
	}
	if err := g.checkImage(ctx, req.Boot.Files["uki.efi"]); err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, g.callTimeout)
	defer cancel()
	// A request id lets Compute Engine recognise a repeated insert (a
	// retrying proxy or client) as this one.
	op, err := g.svc.Instances.Insert(g.cfg.Project, g.cfg.Zone, g.instance(req.Name)).
		RequestId(uuid.NewString()).Context(cctx).Do()
	if err != nil {
		return nil, apiError("inserting instance "+req.Name, err)
	}
	if err := g.wait(ctx, op); err != nil {
		return nil, g.abandon(ctx, req.Name, fmt.Errorf("gce: creating instance %s: %w", req.Name, err))
	}
	ak, err := g.attestationKey(ctx, req.Name)
	if err != nil {
		return nil, g.abandon(ctx, req.Name, err)
	}
	return &Launched{AK: ak}, nil
}

// checkImage refuses an image whose description does not name this UKI.
func (g *GCE) checkImage(ctx context.Context, uki []byte) error {
	cctx, cancel := context.WithTimeout(ctx, g.callTimeout)
	defer cancel()
	img, err := g.svc.Images.Get(g.imageProject, g.imageName).Fields("name", "description", "status").Context(cctx).Do()
	if err != nil {
		return apiError("reading image "+g.cfg.Image, err)
	}
	sum := sha256.Sum256(uki)
	want := hex.EncodeToString(sum[:])
	got, err := imageUKIDigest(img.Description)
	switch {
	case err != nil:
		return fmt.Errorf("%w: image %s: %v; want uki-sha256:%s (scripts/image/gce-image.sh)", ErrImageRefused, g.cfg.Image, err, want)
	case got != want:
		return fmt.Errorf("%w: image %s is of UKI sha256:%s, but the verified uki.efi is sha256:%s", ErrImageRefused, g.cfg.Image, got, want)
	case img.Status != "READY":
		return fmt.Errorf("%w: image %s is %q, not READY", ErrImageRefused, g.cfg.Image, img.Status)
	}
	return nil
}

// imageUKIDigest returns the one UKI digest an image description names.
func imageUKIDigest(desc string) (string, error) {
	if len(desc) > maxGCEDescription {
		return "", fmt.Errorf("description over %d bytes", maxGCEDescription)
	}
	var found string
	for _, m := range ukiDigest.FindAllStringSubmatch(desc, 8) {
		d := strings.ToLower(m[1])
		if found != "" && d != found {
			return "", errors.New("description names more than one UKI digest")
		}
		found = d
	}
	if found == "" {
		return "", errors.New("description names no uki-sha256 digest")
	}
	return found, nil
}

// instance is the instance Launch inserts.
func (g *GCE) instance(name string) *compute.Instance {
	c := g.cfg
	labels := map[string]string{gcePoolLabel: g.pool, gceFleetLabel: gceFleetMarker}
	nic := &compute.NetworkInterface{Network: c.network(), Subnetwork: c.subnetwork(), NicType: "GVNIC"}
	if !c.NoExternalIP {
		// The runner must reach GitHub; without Cloud NAT that takes an
		// external address.
		nic.AccessConfigs = []*compute.AccessConfig{{Name: "external-nat", Type: "ONE_TO_ONE_NAT"}}
	}
	in := &compute.Instance{
		Name:        name,
		Description: "attested-runner VM of pool " + g.pool,
		MachineType: "zones/" + c.Zone + "/machineTypes/" + c.MachineType,
		Disks: []*compute.AttachedDisk{{
			Boot: true, AutoDelete: true, Type: "PERSISTENT", Mode: "READ_WRITE",
			InitializeParams: &compute.AttachedDiskInitializeParams{
				SourceImage: c.Image,
				DiskType:    "zones/" + c.Zone + "/diskTypes/" + c.DiskType,
				Labels:      labels,
			},
		}},
		NetworkInterfaces: []*compute.NetworkInterface{nic},
		ShieldedInstanceConfig: &compute.ShieldedInstanceConfig{
			EnableVtpm: true, EnableIntegrityMonitoring: true, EnableSecureBoot: true,
		},
		// Confidential VMs cannot live-migrate; a runner VM is single use,
		// so it is never restarted either.
		Scheduling: &compute.Scheduling{
			OnHostMaintenance: "TERMINATE",
			AutomaticRestart:  googleapi.Bool(false),
		},
		Labels: labels,
		Metadata: &compute.Metadata{Items: []*compute.MetadataItems{
			{Key: gceVMMetadata, Value: googleapi.String(name)},
		}},
	}
	if c.Confidential != "none" {
		in.ConfidentialInstanceConfig = &compute.ConfidentialInstanceConfig{ConfidentialInstanceType: c.Confidential}
	}
	if c.ServiceAccount != "" {
		in.ServiceAccounts = []*compute.ServiceAccount{{
			Email: c.ServiceAccount, Scopes: []string{"https://www.googleapis.com/auth/cloud-platform"},
		}}
	}
	return in
}

// attestationKey returns the vTPM attestation key Compute Engine reports
// for the instance. The ECC P-256 AK comes first: it is the one the agent
// attests with (attest.OpenAK tries the GCE ECC AK before anything else);
// the RSA 2048 AK (signingKey) is used only when no ECC AK is reported.
func (g *GCE) attestationKey(ctx context.Context, name string) (crypto.PublicKey, error) {
	cctx, cancel := context.WithTimeout(ctx, g.callTimeout)
	defer cancel()
	id, err := g.svc.Instances.GetShieldedInstanceIdentity(g.cfg.Project, g.cfg.Zone, name).Context(cctx).Do()
	if err != nil {
		return nil, apiError("reading the shielded identity of instance "+name, err)
	}
	entry, which := id.EccP256SigningKey, "eccP256SigningKey"
	if entry == nil || entry.EkPub == "" {
		entry, which = id.SigningKey, "signingKey"
	}
	if entry == nil || entry.EkPub == "" {
		return nil, fmt.Errorf("gce: instance %s: the shielded identity has no attestation key (signingKey)", name)
	}
	k, err := parseGCEKey(entry.EkPub)
	if err != nil {
		return nil, fmt.Errorf("gce: instance %s: shielded identity %s: %w", name, which, err)
	}
	return k, nil
}

// parseGCEKey parses a PEM public key as the shielded identity gives it:
// one PUBLIC KEY (PKIX) or RSA PUBLIC KEY (PKCS #1) block, an RSA key of at
// least 2048 bits or a P-256 key.
func parseGCEKey(s string) (crypto.PublicKey, error) {
	if len(s) > maxGCEKeyPEM {
		return nil, fmt.Errorf("key PEM over %d bytes", maxGCEKeyPEM)
	}
	block, rest := pem.Decode([]byte(s))
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("data after the PEM block")
	}
	var k crypto.PublicKey
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		k, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		k, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q, want PUBLIC KEY or RSA PUBLIC KEY", block.Type)
	}
	if err != nil {
		return nil, err
	}
	switch k := k.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits", k.N.BitLen())
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("ECDSA key on %s, want P-256", k.Curve.Params().Name)
		}
	default:
		return nil, fmt.Errorf("%T is not an attestation key type", k)
	}
	return k, nil
}

// abandon deletes an instance whose launch failed after the insert (no
// zombies), then returns cause, with the deletion's failure if any.
func (g *GCE) abandon(ctx context.Context, name string, cause error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.opTimeout)
	defer cancel()
	if err := g.Destroy(ctx, name); err != nil {
		return fmt.Errorf("%w (and deleting the instance failed: %v)", cause, err)
	}
	return cause
}

// Destroy implements Provider: the instance is deleted (its boot disk with
// it) and the operation waited for. An instance that does not exist is not
// an error; one without this pool's label is refused, so a wrong name can
// never delete someone else's instance.
func (g *GCE) Destroy(ctx context.Context, name string) error {
	if !gceName.MatchString(name) {
		return fmt.Errorf("gce: VM name %q is not a Compute Engine instance name", name)
	}
	cctx, cancel := context.WithTimeout(ctx, g.callTimeout)
	defer cancel()
	in, err := g.svc.Instances.Get(g.cfg.Project, g.cfg.Zone, name).Fields("name", "labels").Context(cctx).Do()
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return apiError("reading instance "+name, err)
	}
	if in.Labels[gcePoolLabel] != g.pool {
		return fmt.Errorf("gce: instance %s is not labelled %s=%s: not deleting it", name, gcePoolLabel, g.pool)
	}
	op, err := g.svc.Instances.Delete(g.cfg.Project, g.cfg.Zone, name).RequestId(uuid.NewString()).Context(cctx).Do()
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return apiError("deleting instance "+name, err)
	}
	if err := g.wait(ctx, op); err != nil {
		var oe *OperationError
		if errors.As(err, &oe) && oe.Has("RESOURCE_NOT_FOUND") {
			return nil
		}
		return fmt.Errorf("gce: deleting instance %s: %w", name, err)
	}
	return nil
}

// List implements Provider: the instances labelled with this pool, every
// page of them. Running is true while an instance is provisioning, staging
// or running.
func (g *GCE) List(ctx context.Context) ([]Instance, error) {
	var out []Instance
	token := ""
	for page := 0; ; page++ {
		if page == maxGCEListPages {
			return nil, fmt.Errorf("gce: listing instances: more than %d pages", maxGCEListPages)
		}
		cctx, cancel := context.WithTimeout(ctx, g.callTimeout)
		call := g.svc.Instances.List(g.cfg.Project, g.cfg.Zone).
			Filter("labels."+gcePoolLabel+" = "+g.pool).MaxResults(500).
			Fields("items(name,status,labels)", "nextPageToken").Context(cctx)
		if token != "" {
			call.PageToken(token)
		}
		resp, err := call.Do()
		cancel()
		if err != nil {
			return nil, apiError("listing instances", err)
		}
		for _, in := range resp.Items {
			// The filter selects them already; an instance without the
			// label is never this pool's, whatever the server says.
			if in == nil || in.Labels[gcePoolLabel] != g.pool {
				continue
			}
			switch in.Status {
			case "PROVISIONING", "STAGING", "RUNNING":
				out = append(out, Instance{Name: in.Name, Running: true})
			default:
				out = append(out, Instance{Name: in.Name})
			}
		}
		if resp.NextPageToken == "" {
			return out, nil
		}
		if resp.NextPageToken == token {
			return nil, errors.New("gce: listing instances: the server repeated a page token")
		}
		token = resp.NextPageToken
	}
}

// wait waits for a zone operation to be DONE, at most opTimeout, and
// returns its errors as an *OperationError.
func (g *GCE) wait(ctx context.Context, op *compute.Operation) error {
	ctx, cancel := context.WithTimeout(ctx, g.opTimeout)
	defer cancel()
	for op == nil || op.Status != "DONE" {
		if op == nil || op.Name == "" {
			return errors.New("the API returned no operation to wait for")
		}
		began := time.Now()
		cctx, ccancel := context.WithTimeout(ctx, g.callTimeout)
		next, err := g.svc.ZoneOperations.Wait(g.cfg.Project, g.cfg.Zone, op.Name).Context(cctx).Do()
		ccancel()
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("operation %s not done: %w", op.Name, ctx.Err())
			}
			return apiError("waiting for operation "+op.Name, err)
		}
		if next == nil || next.Name != op.Name {
			return fmt.Errorf("waiting for operation %s: the API answered with another operation", op.Name)
		}
		op = next
		if op.Status != "DONE" && time.Since(began) < g.pollInterval {
			// Wait returns early at times; do not spin.
			select {
			case <-ctx.Done():
				return fmt.Errorf("operation %s not done: %w", op.Name, ctx.Err())
			case <-time.After(g.pollInterval):
			}
		}
	}
	if op.Error != nil {
		oe := &OperationError{Operation: op.Name, HTTPStatus: int(op.HttpErrorStatusCode)}
		for _, e := range op.Error.Errors {
			if e != nil && len(oe.Errors) < 16 {
				oe.Errors = append(oe.Errors, OperationErrorItem{Code: e.Code, Message: truncate(e.Message, maxGCEErrorText)})
			}
		}
		return oe
	}
	return nil
}

// OperationError is a Compute Engine operation that ended with errors.
type OperationError struct {
	Operation  string
	HTTPStatus int
	Errors     []OperationErrorItem
}

// OperationErrorItem is one of an operation's errors.
type OperationErrorItem struct {
	Code    string // e.g. QUOTA_EXCEEDED, RESOURCE_NOT_FOUND
	Message string
}

func (e *OperationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "operation %s failed", e.Operation)
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.HTTPStatus)
	}
	if len(e.Errors) == 0 {
		b.WriteString(": no error detail")
	}
	for i, it := range e.Errors {
		sep := "; "
		if i == 0 {
			sep = ": "
		}
		fmt.Fprintf(&b, "%s%s: %s", sep, it.Code, it.Message)
	}
	return b.String()
}

// Has reports whether one of the operation's errors has this code.
func (e *OperationError) Has(code string) bool {
	for _, it := range e.Errors {
		if it.Code == code {
			return true
		}
	}
	return false
}

func isNotFound(err error) bool {
	var ge *googleapi.Error
	return errors.As(err, &ge) && ge.Code == http.StatusNotFound
}

// gceAPIError names the call that failed and keeps the API's error (for
// errors.As *googleapi.Error) while bounding its text.
type gceAPIError struct {
	what string
	err  error
}

func apiError(what string, err error) error { return &gceAPIError{what: what, err: err} }

func (e *gceAPIError) Error() string {
	return "gce: " + e.what + ": " + truncate(e.err.Error(), maxGCEErrorText)
}

func (e *gceAPIError) Unwrap() error { return e.err }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "..."
}

// boundedBodies limits the response bodies the client library reads.
type boundedBodies struct{ base http.RoundTripper }

func (t boundedBodies) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	limit := int64(maxGCEResponse)
	if resp.StatusCode >= 300 {
		limit = maxGCEErrorResponse
	}
	resp.Body = &limitedBody{r: io.LimitReader(resp.Body, limit+1), c: resp.Body, limit: limit, left: limit}
	return resp, nil
}

// limitedBody fails a read past its limit (io.LimitReader alone would end
// the body silently and let a truncated response decode).
type limitedBody struct {
	r           io.Reader
	c           io.Closer
	limit, left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, fmt.Errorf("compute engine response over %d bytes", b.limit)
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.c.Close() }
