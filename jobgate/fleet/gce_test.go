package fleet

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/e2e/fakegce"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	compute "google.golang.org/api/compute/v1"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
)

const (
	testProject      = "runner-project"
	testZone         = "us-central1-a"
	testImageProject = "image-project"
	testImageName    = "runner-uki-1"
	testPool         = "pool-a"
	testVM           = "pool-a-0123456789"
)

type gceFixture struct {
	g    *GCE
	fake *fakegce.Server
	uki  []byte
}

func (f *gceFixture) req() *LaunchRequest {
	return &LaunchRequest{Name: testVM, Pool: &PoolConfig{Name: testPool},
		Boot: &BootFiles{Boot: "uki", Files: map[string][]byte{"uki.efi": f.uki}}}
}

func ukiSHA256(b []byte) string {
	d := sha256.Sum256(b)
	return hex.EncodeToString(d[:])
}

// newGCEFixture is a provider talking to a fake Compute Engine that holds
// the image of a random UKI.
func newGCEFixture(t *testing.T, mutate func(*GCEConfig)) *gceFixture {
	t.Helper()
	fake, hs := fakegce.Start(t)
	uki := make([]byte, 4096)
	rand.Read(uki)
	fake.AddImage(testImageProject, &compute.Image{
		Name:        testImageName,
		Description: "attested-runner image uki-sha256:" + ukiSHA256(uki) + " (gce-image.sh)",
		GuestOsFeatures: []*compute.GuestOsFeature{
			{Type: "UEFI_COMPATIBLE"}, {Type: "GVNIC"}, {Type: "TDX_CAPABLE"}, {Type: "SEV_SNP_CAPABLE"},
		},
	})
	cfg := &GCEConfig{Project: testProject, Zone: testZone, Image: "projects/" + testImageProject + "/global/images/" + testImageName}
	if mutate != nil {
		mutate(cfg)
	}
	g, err := NewGCE(context.Background(), testPool, cfg,
		option.WithEndpoint(hs.URL+"/compute/v1/"), option.WithoutAuthentication(), option.WithHTTPClient(hs.Client()))
	if err != nil {
		t.Fatal(err)
	}
	g.pollInterval = time.Millisecond
	g.opTimeout = 10 * time.Second
	return &gceFixture{g: g, fake: fake, uki: uki}
}

func countRequests(reqs []fakegce.Request, method, suffix string) int {
	n := 0
	for _, r := range reqs {
		if r.Method == method && strings.HasSuffix(r.Path, suffix) {
			n++
		}
	}
	return n
}

func sameKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

func TestGCELaunch(t *testing.T) {
	f := newGCEFixture(t, nil)
	f.fake.OpWaits = 2 // Wait answers RUNNING twice: the provider waits on
	got, err := f.g.Launch(context.Background(), f.req())
	if err != nil {
		t.Fatal(err)
	}
	ecc, _ := f.fake.SigningKeys(testProject, testZone, testVM)
	if !sameKey(got.AK, ecc) {
		t.Errorf("Launched.AK = %T, want the instance's ECC P-256 signing key", got.AK)
	}
	in, inserted, ok := f.fake.Instance(testProject, testZone, testVM)
	if !ok || in.Status != "RUNNING" {
		t.Fatalf("instance after launch: %v %+v", ok, in)
	}
	labels := map[string]string{"attested-runner-pool": testPool, "attested-runner": "fleet"}
	name := testVM
	want := &compute.Instance{
		Name:        testVM,
		Description: "attested-runner VM of pool " + testPool,
		MachineType: "zones/" + testZone + "/machineTypes/c3-standard-4",
		Disks: []*compute.AttachedDisk{{
			Boot: true, AutoDelete: true, Type: "PERSISTENT", Mode: "READ_WRITE",
			InitializeParams: &compute.AttachedDiskInitializeParams{
				SourceImage: "projects/" + testImageProject + "/global/images/" + testImageName,
				DiskType:    "zones/" + testZone + "/diskTypes/pd-balanced",
				Labels:      labels,
			},
		}},
		NetworkInterfaces: []*compute.NetworkInterface{{
			Network: "global/networks/default", NicType: "GVNIC",
			AccessConfigs: []*compute.AccessConfig{{Name: "external-nat", Type: "ONE_TO_ONE_NAT"}},
		}},
		ShieldedInstanceConfig:     &compute.ShieldedInstanceConfig{EnableVtpm: true, EnableIntegrityMonitoring: true, EnableSecureBoot: true},
		ConfidentialInstanceConfig: &compute.ConfidentialInstanceConfig{ConfidentialInstanceType: "TDX"},
		Scheduling:                 &compute.Scheduling{OnHostMaintenance: "TERMINATE", AutomaticRestart: googleapi.Bool(false)},
		Labels:                     labels,
		Metadata:                   &compute.Metadata{Items: []*compute.MetadataItems{{Key: "attested-runner-vm", Value: &name}}},
	}
	if d := cmp.Diff(want, inserted); d != "" {
		t.Errorf("inserted instance (-want +got):\n%s", d)
	}
	var calls []string
	for _, r := range f.fake.Requests() {
		calls = append(calls, r.Method+" "+r.Path)
		if r.Method == "POST" && strings.HasSuffix(r.Path, "/instances") && r.Query.Get("requestId") == "" {
			t.Error("insert without a requestId")
		}
	}
	z := "/compute/v1/projects/" + testProject + "/zones/" + testZone
	wantCalls := []string{
		"GET /compute/v1/projects/" + testImageProject + "/global/images/" + testImageName,
		"POST " + z + "/instances",
		"WAIT", "WAIT", "WAIT",
		"GET " + z + "/instances/" + testVM + "/getShieldedInstanceIdentity",
	}
	for i, c := range calls {
		if strings.HasPrefix(c, "POST "+z+"/operations/") && strings.HasSuffix(c, "/wait") {
			calls[i] = "WAIT"
		}
	}
	if d := cmp.Diff(wantCalls, calls); d != "" {
		t.Errorf("API calls (-want +got):\n%s", d)
	}
}

// The configuration's choices reach the insert request.
func TestGCELaunchRequestShape(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*GCEConfig)
		check  func(t *testing.T, in *compute.Instance)
	}{
		{"sev-snp", func(c *GCEConfig) { c.Confidential, c.MachineType = "SEV_SNP", "n2d-standard-2" }, func(t *testing.T, in *compute.Instance) {
			if in.ConfidentialInstanceConfig == nil || in.ConfidentialInstanceConfig.ConfidentialInstanceType != "SEV_SNP" {
				t.Errorf("confidential config %+v", in.ConfidentialInstanceConfig)
			}
			if in.MachineType != "zones/"+testZone+"/machineTypes/n2d-standard-2" {
				t.Errorf("machine type %q", in.MachineType)
			}
		}},
		{"shielded only", func(c *GCEConfig) { c.Confidential = "none" }, func(t *testing.T, in *compute.Instance) {
			if in.ConfidentialInstanceConfig != nil {
				t.Errorf("confidential config %+v with confidential none", in.ConfidentialInstanceConfig)
			}
			if sc := in.ShieldedInstanceConfig; sc == nil || !sc.EnableVtpm || !sc.EnableSecureBoot || !sc.EnableIntegrityMonitoring {
				t.Errorf("shielded config %+v", sc)
			}
		}},
		{"no external IP, named networks", func(c *GCEConfig) { c.NoExternalIP, c.Network, c.Subnetwork = true, "runners", "runners-sub" }, func(t *testing.T, in *compute.Instance) {
			nic := in.NetworkInterfaces[0]
			if len(nic.AccessConfigs) != 0 {
				t.Errorf("access configs %+v with noExternalIP", nic.AccessConfigs)
			}
			if nic.Network != "global/networks/runners" || nic.Subnetwork != "regions/us-central1/subnetworks/runners-sub" {
				t.Errorf("network %q subnetwork %q", nic.Network, nic.Subnetwork)
			}
		}},
		{"full network URLs", func(c *GCEConfig) {
			c.Network, c.Subnetwork = "projects/host/global/networks/shared", "projects/host/regions/us-central1/subnetworks/ci"
		}, func(t *testing.T, in *compute.Instance) {
			nic := in.NetworkInterfaces[0]
			if nic.Network != "projects/host/global/networks/shared" || nic.Subnetwork != "projects/host/regions/us-central1/subnetworks/ci" {
				t.Errorf("network %q subnetwork %q", nic.Network, nic.Subnetwork)
			}
		}},
		{"service account", func(c *GCEConfig) { c.ServiceAccount = "runner@p.iam.gserviceaccount.com" }, func(t *testing.T, in *compute.Instance) {
			if len(in.ServiceAccounts) != 1 || in.ServiceAccounts[0].Email != "runner@p.iam.gserviceaccount.com" {
				t.Errorf("service accounts %+v", in.ServiceAccounts)
			}
		}},
		{"no service account by default", nil, func(t *testing.T, in *compute.Instance) {
			if len(in.ServiceAccounts) != 0 {
				t.Errorf("service accounts %+v without serviceAccount", in.ServiceAccounts)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newGCEFixture(t, tc.mutate)
			if _, err := f.g.Launch(context.Background(), f.req()); err != nil {
				t.Fatal(err)
			}
			_, inserted, _ := f.fake.Instance(testProject, testZone, testVM)
			tc.check(t, inserted)
		})
	}
}

// An image whose description does not name the verified UKI is refused
// before any instance is inserted.
func TestGCELaunchRefusesImage(t *testing.T) {
	other := ukiSHA256([]byte("another UKI"))
	for _, tc := range []struct {
		name    string
		desc    string
		status  string
		req     func(*LaunchRequest)
		wantMsg []string
	}{
		{name: "digest mismatch", desc: "uki-sha256:" + other, wantMsg: []string{"sha256:" + other, "verified uki.efi is sha256:"}},
		{name: "no digest", desc: "a runner image"},
		{name: "truncated digest", desc: "uki-sha256:" + other[:63]},
		{name: "two digests", desc: "uki-sha256:" + other + " uki-sha256:SELF", wantMsg: []string{"more than one"}},
		{name: "image not ready", desc: "uki-sha256:SELF", status: "PENDING", wantMsg: []string{`"PENDING"`}},
		{name: "request without uki", desc: "uki-sha256:SELF", req: func(r *LaunchRequest) { r.Boot.Files = map[string][]byte{"vmlinuz": {1}} }},
		{name: "qemu-direct request", desc: "uki-sha256:SELF", req: func(r *LaunchRequest) { r.Boot.Boot = "qemu-direct" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newGCEFixture(t, nil)
			self := ukiSHA256(f.uki)
			f.fake.AddImage(testImageProject, &compute.Image{Name: testImageName, Status: tc.status,
				Description:     strings.ReplaceAll(tc.desc, "SELF", self),
				GuestOsFeatures: []*compute.GuestOsFeature{{Type: "UEFI_COMPATIBLE"}, {Type: "TDX_CAPABLE"}}})
			req := f.req()
			if tc.req != nil {
				tc.req(req)
			}
			_, err := f.g.Launch(context.Background(), req)
			if !errors.Is(err, ErrImageRefused) {
				t.Fatalf("Launch: %v, want ErrImageRefused", err)
			}
			for _, m := range tc.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not say %q", err, m)
				}
			}
			if tc.name == "digest mismatch" && !strings.Contains(err.Error(), self) {
				t.Errorf("error %q does not name the verified digest %s", err, self)
			}
			if n := countRequests(f.fake.Requests(), "POST", "/instances"); n != 0 {
				t.Errorf("%d insert requests reached the API after a refused image", n)
			}
		})
	}
}

func TestGCELaunchImageMissing(t *testing.T) {
	f := newGCEFixture(t, func(c *GCEConfig) { c.Image = "projects/" + testImageProject + "/global/images/gone" })
	_, err := f.g.Launch(context.Background(), f.req())
	var ge *googleapi.Error
	if !errors.As(err, &ge) || ge.Code != http.StatusNotFound || !strings.Contains(err.Error(), "reading image") {
		t.Fatalf("Launch: %v, want the API's 404 for the image", err)
	}
	if n := countRequests(f.fake.Requests(), "POST", "/instances"); n != 0 {
		t.Errorf("%d insert requests after the image read failed", n)
	}
}

func TestGCELaunchInsertError(t *testing.T) {
	f := newGCEFixture(t, nil)
	f.fake.Fail(fakegce.Fault{Method: "POST", PathSuffix: "/instances", Status: http.StatusInternalServerError})
	_, err := f.g.Launch(context.Background(), f.req())
	var ge *googleapi.Error
	if !errors.As(err, &ge) || ge.Code != http.StatusInternalServerError {
		t.Fatalf("Launch: %v, want the API's 500", err)
	}
	if !strings.Contains(err.Error(), "inserting instance "+testVM) || !strings.Contains(err.Error(), "injected fault") {
		t.Errorf("error %q does not say what failed", err)
	}
	if names := f.fake.InstanceNames(); len(names) != 0 {
		t.Errorf("instances %v after a failed insert", names)
	}
}

// An insert operation that ends with errors fails the launch, and the
// instance it left behind is deleted.
func TestGCELaunchOperationError(t *testing.T) {
	f := newGCEFixture(t, nil)
	f.fake.OpWaits = 1
	f.fake.InsertFailure(http.StatusForbidden, "QUOTA_EXCEEDED", "Quota 'C3_CPUS' exceeded. Limit: 0.0 in region us-central1.",
		"ZONE_RESOURCE_POOL_EXHAUSTED", "The zone does not have enough resources.")
	_, err := f.g.Launch(context.Background(), f.req())
	var oe *OperationError
	if !errors.As(err, &oe) {
		t.Fatalf("Launch: %v, want an *OperationError", err)
	}
	if !oe.Has("QUOTA_EXCEEDED") || !oe.Has("ZONE_RESOURCE_POOL_EXHAUSTED") || oe.HTTPStatus != http.StatusForbidden {
		t.Errorf("operation error %+v", oe)
	}
	for _, m := range []string{"QUOTA_EXCEEDED: Quota 'C3_CPUS' exceeded", "ZONE_RESOURCE_POOL_EXHAUSTED", "HTTP 403", "creating instance " + testVM} {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not say %q", err, m)
		}
	}
	if names := f.fake.InstanceNames(); len(names) != 0 {
		t.Errorf("instances %v left after a failed insert operation", names)
	}
	if n := countRequests(f.fake.Requests(), "DELETE", "/instances/"+testVM); n != 1 {
		t.Errorf("%d delete requests, want 1", n)
	}
}

// Anything failing after the insert deletes the instance: no zombies.
func TestGCELaunchIdentityFailureDeletes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(*fakegce.Server)
		check  func(error) bool
		wantIn string
	}{
		{"identity call fails", func(s *fakegce.Server) {
			s.Fail(fakegce.Fault{Method: "GET", PathSuffix: "/getShieldedInstanceIdentity", Status: http.StatusInternalServerError})
		}, func(err error) bool {
			var ge *googleapi.Error
			return errors.As(err, &ge) && ge.Code == http.StatusInternalServerError
		}, "reading the shielded identity"},
		{"no signing key", func(s *fakegce.Server) {
			s.Identity = func(_ string, id *compute.ShieldedInstanceIdentity) { id.SigningKey, id.EccP256SigningKey = nil, nil }
		}, nil, "no attestation key"},
		{"malformed PEM", func(s *fakegce.Server) {
			s.Identity = func(_ string, id *compute.ShieldedInstanceIdentity) {
				id.EccP256SigningKey = &compute.ShieldedInstanceIdentityEntry{EkPub: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}
			}
		}, nil, "eccP256SigningKey"},
		{"certificate instead of key", func(s *fakegce.Server) {
			s.Identity = func(_ string, id *compute.ShieldedInstanceIdentity) {
				id.EccP256SigningKey = &compute.ShieldedInstanceIdentityEntry{EkPub: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}
			}
		}, nil, `PEM block "CERTIFICATE"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newGCEFixture(t, nil)
			tc.setup(f.fake)
			_, err := f.g.Launch(context.Background(), f.req())
			if err == nil || !strings.Contains(err.Error(), tc.wantIn) || (tc.check != nil && !tc.check(err)) {
				t.Fatalf("Launch: %v, want an error saying %q", err, tc.wantIn)
			}
			if names := f.fake.InstanceNames(); len(names) != 0 {
				t.Errorf("instances %v left after the launch failed", names)
			}
		})
	}
}

// Only the RSA AK reported (an older vTPM): it is the one returned.
func TestGCELaunchRSAOnlyIdentity(t *testing.T) {
	f := newGCEFixture(t, nil)
	f.fake.Identity = func(_ string, id *compute.ShieldedInstanceIdentity) { id.EccP256SigningKey = nil }
	got, err := f.g.Launch(context.Background(), f.req())
	if err != nil {
		t.Fatal(err)
	}
	_, rsaKey := f.fake.SigningKeys(testProject, testZone, testVM)
	if !sameKey(got.AK, rsaKey) {
		t.Errorf("Launched.AK = %T, want the RSA signing key", got.AK)
	}
}

// An operation that never finishes is waited for only as long as the
// provider allows, and the instance is deleted.
func TestGCELaunchOperationTimeout(t *testing.T) {
	f := newGCEFixture(t, nil)
	f.fake.OpWaits = 1 << 30
	f.g.opTimeout = 500 * time.Millisecond // long enough for the insert to reach the API on a loaded machine
	_, err := f.g.Launch(context.Background(), f.req())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Launch: %v, want a deadline", err)
	}
	// The delete's own operation never finishes either, but its request
	// reached the API.
	if n := countRequests(f.fake.Requests(), "DELETE", "/instances/"+testVM); n != 1 {
		t.Errorf("%d delete requests, want 1", n)
	}
}

func TestGCEDestroy(t *testing.T) {
	t.Run("deletes a pool instance", func(t *testing.T) {
		f := newGCEFixture(t, nil)
		f.fake.OpWaits = 1
		if _, err := f.g.Launch(context.Background(), f.req()); err != nil {
			t.Fatal(err)
		}
		if err := f.g.Destroy(context.Background(), testVM); err != nil {
			t.Fatal(err)
		}
		if names := f.fake.InstanceNames(); len(names) != 0 {
			t.Errorf("instances %v after Destroy", names)
		}
	})
	t.Run("404 is not an error", func(t *testing.T) {
		f := newGCEFixture(t, nil)
		if err := f.g.Destroy(context.Background(), "pool-a-gone"); err != nil {
			t.Fatalf("Destroy of a missing instance: %v", err)
		}
	})
	t.Run("404 on delete is not an error", func(t *testing.T) {
		f := newGCEFixture(t, nil)
		f.fake.AddInstance(testProject, testZone, &compute.Instance{Name: testVM, Labels: map[string]string{"attested-runner-pool": testPool}})
		f.fake.Fail(fakegce.Fault{Method: "DELETE", PathSuffix: "/instances/" + testVM, Status: http.StatusNotFound})
		if err := f.g.Destroy(context.Background(), testVM); err != nil {
			t.Fatalf("Destroy racing another delete: %v", err)
		}
	})
	t.Run("refuses another pool's instance", func(t *testing.T) {
		f := newGCEFixture(t, nil)
		f.fake.AddInstance(testProject, testZone, &compute.Instance{Name: "build-server", Labels: map[string]string{"attested-runner-pool": "pool-b"}})
		err := f.g.Destroy(context.Background(), "build-server")
		if err == nil || !strings.Contains(err.Error(), "not deleting it") {
			t.Fatalf("Destroy of another pool's instance: %v", err)
		}
		if n := countRequests(f.fake.Requests(), "DELETE", "/instances/build-server"); n != 0 {
			t.Errorf("%d delete requests for another pool's instance", n)
		}
	})
	t.Run("delete error surfaced", func(t *testing.T) {
		f := newGCEFixture(t, nil)
		f.fake.AddInstance(testProject, testZone, &compute.Instance{Name: testVM, Labels: map[string]string{"attested-runner-pool": testPool}})
		f.fake.Fail(fakegce.Fault{Method: "DELETE", PathSuffix: "/instances/" + testVM, Status: http.StatusServiceUnavailable})
		err := f.g.Destroy(context.Background(), testVM)
		var ge *googleapi.Error
		if !errors.As(err, &ge) || ge.Code != http.StatusServiceUnavailable {
			t.Fatalf("Destroy: %v, want the API's 503", err)
		}
	})
}

func TestGCEList(t *testing.T) {
	f := newGCEFixture(t, nil)
	f.fake.PageSize = 2
	pool := map[string]string{"attested-runner-pool": testPool, "attested-runner": "fleet"}
	statuses := map[string]string{
		"pool-a-1": "PROVISIONING", "pool-a-2": "STAGING", "pool-a-3": "RUNNING",
		"pool-a-4": "STOPPING", "pool-a-5": "TERMINATED",
	}
	for name, st := range statuses {
		f.fake.AddInstance(testProject, testZone, &compute.Instance{Name: name, Status: st, Labels: pool})
	}
	f.fake.AddInstance(testProject, testZone, &compute.Instance{Name: "pool-b-1", Labels: map[string]string{"attested-runner-pool": "pool-b"}})
	f.fake.AddInstance(testProject, testZone, &compute.Instance{Name: "unlabelled"})
	f.fake.AddInstance(testProject, "us-east1-b", &compute.Instance{Name: "pool-a-9", Labels: pool})
	got, err := f.g.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []Instance{
		{Name: "pool-a-1", Running: true}, {Name: "pool-a-2", Running: true}, {Name: "pool-a-3", Running: true},
		{Name: "pool-a-4"}, {Name: "pool-a-5"},
	}
	if d := cmp.Diff(want, got, cmpopts.SortSlices(func(a, b Instance) bool { return a.Name < b.Name })); d != "" {
		t.Errorf("List (-want +got):\n%s", d)
	}
	var tokens []string
	for _, r := range f.fake.Requests() {
		if r.Method != "GET" || !strings.HasSuffix(r.Path, "/zones/"+testZone+"/instances") {
			continue
		}
		if fl := r.Query.Get("filter"); fl != "labels.attested-runner-pool = "+testPool {
			t.Errorf("list filter %q", fl)
		}
		tokens = append(tokens, r.Query.Get("pageToken"))
	}
	if d := cmp.Diff([]string{"", "page-2", "page-4"}, tokens); d != "" {
		t.Errorf("page tokens (-want +got):\n%s", d)
	}
}

func TestGCEListError(t *testing.T) {
	f := newGCEFixture(t, nil)
	f.fake.Fail(fakegce.Fault{Method: "GET", PathSuffix: "/instances", Status: http.StatusTooManyRequests})
	_, err := f.g.List(context.Background())
	var ge *googleapi.Error
	if !errors.As(err, &ge) || ge.Code != http.StatusTooManyRequests || !strings.Contains(err.Error(), "listing instances") {
		t.Fatalf("List: %v, want the API's 429", err)
	}
}

// rawGCE is a provider talking to a handler that answers oddly.
func rawGCE(t *testing.T, h http.HandlerFunc) *GCE {
	t.Helper()
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	g, err := NewGCE(context.Background(), testPool,
		&GCEConfig{Project: testProject, Zone: testZone, Image: "projects/" + testImageProject + "/global/images/" + testImageName},
		option.WithEndpoint(hs.URL+"/compute/v1/"), option.WithoutAuthentication(), option.WithHTTPClient(hs.Client()))
	if err != nil {
		t.Fatal(err)
	}
	g.pollInterval, g.opTimeout = time.Millisecond, 2*time.Second
	return g
}

// Odd responses give clear errors, never a panic or an endless loop.
func TestGCEOddResponses(t *testing.T) {
	uki := []byte("uki")
	req := &LaunchRequest{Name: testVM, Boot: &BootFiles{Boot: "uki", Files: map[string][]byte{"uki.efi": uki}}}
	image := fmt.Sprintf(`{"name":%q,"status":"READY","description":"uki-sha256:%s"}`, testImageName, ukiSHA256(uki))
	t.Run("repeated page token", func(t *testing.T) {
		g := rawGCE(t, func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `{"items":[{"name":"pool-a-1","status":"RUNNING","labels":{"attested-runner-pool":"pool-a"}}],"nextPageToken":"again"}`)
		})
		if _, err := g.List(context.Background()); err == nil || !strings.Contains(err.Error(), "repeated a page token") {
			t.Fatalf("List: %v", err)
		}
	})
	t.Run("endless pages", func(t *testing.T) {
		n := 0
		g := rawGCE(t, func(w http.ResponseWriter, r *http.Request) {
			n++
			fmt.Fprintf(w, `{"items":[null],"nextPageToken":"t%d"}`, n)
		})
		if _, err := g.List(context.Background()); err == nil || !strings.Contains(err.Error(), "more than 100 pages") {
			t.Fatalf("List: %v", err)
		}
	})
	t.Run("response over the limit", func(t *testing.T) {
		g := rawGCE(t, func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `{"name":"x","description":"`)
			chunk := strings.Repeat("a", 1<<20)
			for range maxGCEResponse>>20 + 1 {
				fmt.Fprint(w, chunk)
			}
			fmt.Fprint(w, `"}`)
		})
		_, err := g.Launch(context.Background(), req)
		if err == nil || !strings.Contains(err.Error(), "response over") {
			t.Fatalf("Launch: %v, want the response bound", err)
		}
	})
	t.Run("error body over the limit", func(t *testing.T) {
		g := rawGCE(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, strings.Repeat("<html>", maxGCEErrorResponse))
		})
		_, err := g.Launch(context.Background(), req)
		if err == nil || len(err.Error()) > 2*maxGCEErrorText {
			t.Fatalf("Launch: error of %d bytes, want a bounded one", len(err.Error()))
		}
	})
	t.Run("operation without a name", func(t *testing.T) {
		g := rawGCE(t, func(w http.ResponseWriter, r *http.Request) {
			switch {
			case strings.Contains(r.URL.Path, "/global/images/"):
				fmt.Fprint(w, image)
			case r.Method == "POST":
				fmt.Fprint(w, `{"status":"RUNNING"}`)
			case r.Method == "GET":
				fmt.Fprint(w, `{"name":"`+testVM+`","labels":{"attested-runner-pool":"pool-a"}}`)
			default:
				fmt.Fprint(w, `{"name":"op-del","status":"DONE"}`)
			}
		})
		if _, err := g.Launch(context.Background(), req); err == nil || !strings.Contains(err.Error(), "no operation to wait for") {
			t.Fatalf("Launch: %v", err)
		}
	})
	t.Run("wait answers another operation", func(t *testing.T) {
		g := rawGCE(t, func(w http.ResponseWriter, r *http.Request) {
			switch {
			case strings.Contains(r.URL.Path, "/global/images/"):
				fmt.Fprint(w, image)
			case strings.HasSuffix(r.URL.Path, "/wait"):
				fmt.Fprint(w, `{"name":"other","status":"DONE"}`)
			case r.Method == "POST":
				fmt.Fprint(w, `{"name":"op-1","status":"RUNNING"}`)
			case r.Method == "GET":
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprint(w, `{"error":{"code":404,"message":"not found"}}`)
			}
		})
		if _, err := g.Launch(context.Background(), req); err == nil || !strings.Contains(err.Error(), "another operation") {
			t.Fatalf("Launch: %v", err)
		}
	})
	t.Run("operation error without detail", func(t *testing.T) {
		g := rawGCE(t, func(w http.ResponseWriter, r *http.Request) {
			switch {
			case strings.Contains(r.URL.Path, "/global/images/"):
				fmt.Fprint(w, image)
			case r.Method == "POST":
				fmt.Fprint(w, `{"name":"op-1","status":"DONE","error":{"errors":[null]}}`)
			case r.Method == "GET":
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprint(w, `{"error":{"code":404,"message":"not found"}}`)
			}
		})
		_, err := g.Launch(context.Background(), req)
		var oe *OperationError
		if !errors.As(err, &oe) || !strings.Contains(err.Error(), "no error detail") {
			t.Fatalf("Launch: %v", err)
		}
	})
}

// NewGCE's own endpoint setting (an HTTPS private endpoint) is used.
func TestGCEConfigEndpoint(t *testing.T) {
	fake := fakegce.New()
	hs := httptest.NewTLSServer(fake)
	t.Cleanup(hs.Close)
	fake.AddInstance(testProject, testZone, &compute.Instance{Name: "pool-a-1", Labels: map[string]string{"attested-runner-pool": testPool}})
	g, err := NewGCE(context.Background(), testPool, &GCEConfig{Project: testProject, Zone: testZone,
		Image: "projects/p/global/images/i", Endpoint: hs.URL + "/compute/v1"},
		option.WithoutAuthentication(), option.WithHTTPClient(hs.Client()))
	if err != nil {
		t.Fatal(err)
	}
	got, err := g.List(context.Background())
	if err != nil || len(got) != 1 {
		t.Fatalf("List through the configured endpoint: %v %v", got, err)
	}
}

func TestGCEConfigValidate(t *testing.T) {
	base := func() *GCEConfig {
		return &GCEConfig{Project: "p", Zone: "europe-west4-a", Image: "projects/p/global/images/i"}
	}
	for _, tc := range []struct {
		name    string
		mutate  func(*GCEConfig)
		wantErr string
	}{
		{"defaults", func(*GCEConfig) {}, ""},
		{"http endpoint", func(c *GCEConfig) { c.Endpoint = "http://compute.example/compute/v1/" }, "https URL"},
		{"endpoint with credentials", func(c *GCEConfig) { c.Endpoint = "https://u:p@compute.example/compute/v1/" }, "https URL"},
		{"zone without region", func(c *GCEConfig) { c.Zone = "zone" }, "gce.zone"},
		{"bad network", func(c *GCEConfig) { c.Network = "https://evil/x" }, "gce.network"},
		{"bad subnetwork", func(c *GCEConfig) { c.Subnetwork = "a/b" }, "gce.subnetwork"},
		{"bad machine type", func(c *GCEConfig) { c.MachineType = "C3 big" }, "gce.machineType"},
		{"bad service account", func(c *GCEConfig) { c.ServiceAccount = "nobody" }, "gce.serviceAccount"},
		{"bad confidential", func(c *GCEConfig) { c.Confidential = "SEV" }, "gce.confidential"},
		{"image without project", func(c *GCEConfig) { c.Image = "global/images/i" }, "gce.image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(c)
			err := c.validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.MachineType != "c3-standard-4" || c.DiskType != "pd-balanced" || c.Confidential != "TDX" {
					t.Errorf("defaults %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("validate: %v, want %q", err, tc.wantErr)
			}
		})
	}
	c := base()
	c.Endpoint = "https://compute.example/compute/v1"
	if err := c.validate(); err != nil || c.Endpoint != "https://compute.example/compute/v1/" {
		t.Errorf("endpoint %q, %v: want a trailing slash added", c.Endpoint, err)
	}
	if _, err := NewGCE(context.Background(), "Pool A", base()); err == nil {
		t.Error("NewGCE accepted a pool name that is no label value")
	}
}

func pemOf(t testing.TB, typ string, der []byte) string {
	t.Helper()
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func TestParseGCEKey(t *testing.T) {
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	pkix := func(k crypto.PublicKey) []byte { b, _ := x509.MarshalPKIXPublicKey(k); return b }
	for _, tc := range []struct {
		name    string
		pem     string
		want    crypto.PublicKey
		wantErr string
	}{
		{"PKIX RSA", pemOf(t, "PUBLIC KEY", pkix(&rsa2048.PublicKey)), &rsa2048.PublicKey, ""},
		{"PKCS1 RSA", pemOf(t, "RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsa2048.PublicKey)), &rsa2048.PublicKey, ""},
		{"PKIX P-256", pemOf(t, "PUBLIC KEY", pkix(&p256.PublicKey)), &p256.PublicKey, ""},
		{"P-384", pemOf(t, "PUBLIC KEY", pkix(&p384.PublicKey)), nil, "want P-256"},
		{"RSA 1024", pemOf(t, "PUBLIC KEY", pkix(&rsa1024.PublicKey)), nil, "1024 bits"},
		{"trailing data", pemOf(t, "PUBLIC KEY", pkix(&p256.PublicKey)) + "junk", nil, "after the PEM block"},
		{"two blocks", pemOf(t, "PUBLIC KEY", pkix(&p256.PublicKey)) + pemOf(t, "PUBLIC KEY", pkix(&p256.PublicKey)), nil, "after the PEM block"},
		{"no PEM", "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE", nil, "no PEM block"},
		{"private key type", pemOf(t, "EC PRIVATE KEY", []byte{1}), nil, "want PUBLIC KEY"},
		{"garbage DER", pemOf(t, "PUBLIC KEY", []byte{0x30, 0x03, 1, 2, 3}), nil, "asn1"},
		{"too long", strings.Repeat(" ", maxGCEKeyPEM+1), nil, "over"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseGCEKey(tc.pem)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseGCEKey: %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !sameKey(got, tc.want) {
				t.Fatalf("parseGCEKey: %v %v", got, err)
			}
		})
	}
}

func TestImageUKIDigest(t *testing.T) {
	d := ukiSHA256([]byte("x"))
	for _, tc := range []struct {
		desc, want string
		ok         bool
	}{
		{"uki-sha256:" + d, d, true},
		{"runner image, uki-sha256:" + strings.ToUpper(d) + ", built 2026", d, true},
		{"uki-sha256:" + d + " again uki-sha256:" + d, d, true},
		{"uki-sha256:" + d + "0", "", false},
		{"uki-sha256:" + d[:60], "", false},
		{"", "", false},
		{strings.Repeat("x", maxGCEDescription) + "uki-sha256:" + d, "", false},
	} {
		got, err := imageUKIDigest(tc.desc)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("imageUKIDigest(%.80q) = %q, %v; want %q ok=%v", tc.desc, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseGCEKey(f *testing.F) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&p256.PublicKey)
	f.Add(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	f.Add("-----BEGIN RSA PUBLIC KEY-----\nMAA=\n-----END RSA PUBLIC KEY-----\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := parseGCEKey(s)
		if err == nil {
			if _, err := x509.MarshalPKIXPublicKey(k); err != nil {
				t.Fatalf("accepted a key the fleet cannot store: %v", err)
			}
		}
	})
}

func FuzzImageUKIDigest(f *testing.F) {
	f.Add("uki-sha256:" + ukiSHA256(nil))
	f.Add("uki-sha256:" + ukiSHA256(nil) + " uki-sha256:" + ukiSHA256([]byte{1}))
	f.Add("a runner image")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := imageUKIDigest(s)
		if err == nil && (len(d) != 64 || strings.ToLower(d) != d || !strings.Contains(strings.ToLower(s), "uki-sha256:"+d)) {
			t.Fatalf("digest %q from %q", d, s)
		}
	})
}

// The production path: a service account key file (cfg.CredentialsFile)
// and the provider's own HTTP client. The key's token_uri is the fake, so
// the token the library fetches must reach every API call.
func TestGCECredentialsFile(t *testing.T) {
	fake, hs := fakegce.Start(t)
	fake.AddInstance(testProject, testZone, &compute.Instance{Name: "pool-a-1", Labels: map[string]string{"attested-runner-pool": testPool}})
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	sa, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": testProject, "private_key_id": "k1",
		"private_key":  pemOf(t, "PRIVATE KEY", der),
		"client_email": "gate@" + testProject + ".iam.gserviceaccount.com", "client_id": "1",
		"token_uri": hs.URL + "/token",
	})
	file := filepath.Join(t.TempDir(), "gate-sa.json")
	if err := os.WriteFile(file, sa, 0o600); err != nil {
		t.Fatal(err)
	}
	g, err := NewGCE(context.Background(), testPool, &GCEConfig{Project: testProject, Zone: testZone,
		Image: "projects/p/global/images/i", CredentialsFile: file}, option.WithEndpoint(hs.URL+"/compute/v1/"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := g.List(context.Background())
	if err != nil || len(got) != 1 {
		t.Fatalf("List: %v, %v", got, err)
	}
	var authz []string
	for _, r := range fake.Requests() {
		if strings.HasPrefix(r.Path, "/compute/") {
			authz = append(authz, r.Authorization)
		}
	}
	if d := cmp.Diff([]string{"Bearer " + fakegce.AccessToken}, authz); d != "" {
		t.Errorf("Authorization of API calls (-want +got):\n%s", d)
	}
}
