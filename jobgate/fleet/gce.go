package fleet

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// GCEConfig runs a pool's VMs as Compute Engine confidential VMs: Shielded
// VM (vTPM, Secure Boot, measured boot) with Intel TDX or AMD SEV-SNP.
// The image is a GCE image made from the pool's signed UKI; the gate
// trusts each VM's vTPM attestation key as Compute Engine reports it
// (instances.getShieldedInstanceIdentity) for that VM only.
//
// Not yet run against Compute Engine: the gce provider (GCE, NewGCE) is
// tested only against a local fake of the Compute Engine REST API
// (e2e/fakegce, which speaks the paths and JSON the official client
// library uses) and has not been run against a real project. The request
// it sends follows Google's documentation for confidential VMs; quotas,
// IAM, organization policies, the real operation timings and the real
// shielded identity of a TDX or SEV-SNP instance have not been exercised.
type GCEConfig struct {
	// Project and Zone the VMs run in; required.
	Project string `json:"project"`
	Zone    string `json:"zone"`
	// MachineType (default "c3-standard-4", which supports TDX).
	MachineType string `json:"machineType,omitempty"`
	// Confidential is "TDX" (default), "SEV_SNP" or "none" (Shielded VM
	// only: L2 at most).
	Confidential string `json:"confidential,omitempty"`
	// Image is the GCE image made from the pool's uki.efi, as
	// "projects/P/global/images/NAME". Its description must carry
	// "uki-sha256:HEX" of that UKI (scripts/image/gce-image.sh), checked
	// before every launch against the file the provenance covers. The VMs
	// boot with Secure Boot on, so the image's signature database must
	// hold the UKI's signer (gce-image.sh --db-cert).
	Image string `json:"image"`
	// DiskType of the boot disk (default "pd-balanced": C3 machines, the
	// TDX ones, do not take the API's default pd-standard).
	DiskType string `json:"diskType,omitempty"`
	// Network and Subnetwork (defaults: the project's default network). A
	// bare name means global/networks/NAME and
	// regions/ZONE'S-REGION/subnetworks/NAME; otherwise give the API's
	// partial URL (projects/P/global/networks/N,
	// projects/P/regions/R/subnetworks/S).
	Network    string `json:"network,omitempty"`
	Subnetwork string `json:"subnetwork,omitempty"`
	// NoExternalIP gives the VMs no external address. By default each VM
	// gets an ephemeral one (a ONE_TO_ONE_NAT access config) because its
	// runner must reach GitHub and the gate; set this when the subnetwork
	// has Cloud NAT or another route out.
	NoExternalIP bool `json:"noExternalIP,omitempty"`
	// ServiceAccount the VMs run as (default: none; the agent needs no
	// Google credentials).
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// CredentialsFile is the gate's service account key (default:
	// Application Default Credentials). Only a service account key is
	// accepted, never an external-account configuration.
	CredentialsFile string `json:"credentialsFile,omitempty"`
	// Endpoint overrides the Compute Engine API URL (a private endpoint),
	// e.g. "https://compute-example.p.googleapis.com/compute/v1/". HTTPS
	// only: the gate's credentials travel with every request.
	Endpoint string `json:"endpoint,omitempty"`
}

var (
	gceName     = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)
	gceImage    = regexp.MustCompile(`^projects/([a-z][-a-z0-9.:]{0,62})/global/images/([a-z]([-a-z0-9]{0,61}[a-z0-9])?)$`)
	gceResource = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$|^(projects/[a-z][-a-z0-9.:]{0,62}/)?(global|regions/[a-z][-a-z0-9]{0,62})/(networks|subnetworks)/[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)
)

func (g *GCEConfig) validate() error {
	switch {
	case g.Project == "" || g.Zone == "":
		return errors.New("gce.project and gce.zone are required")
	case !gceName.MatchString(g.Zone) || strings.LastIndexByte(g.Zone, '-') < 1:
		return fmt.Errorf("gce.zone %q", g.Zone)
	case !gceImage.MatchString(g.Image):
		return fmt.Errorf("gce.image %q: want projects/PROJECT/global/images/NAME", g.Image)
	}
	if g.MachineType == "" {
		g.MachineType = "c3-standard-4"
	}
	if g.DiskType == "" {
		g.DiskType = "pd-balanced"
	}
	switch {
	case !gceName.MatchString(g.MachineType):
		return fmt.Errorf("gce.machineType %q", g.MachineType)
	case !gceName.MatchString(g.DiskType):
		return fmt.Errorf("gce.diskType %q", g.DiskType)
	case g.Network != "" && !gceResource.MatchString(g.Network):
		return fmt.Errorf("gce.network %q: want NAME or projects/P/global/networks/NAME", g.Network)
	case g.Subnetwork != "" && !gceResource.MatchString(g.Subnetwork):
		return fmt.Errorf("gce.subnetwork %q: want NAME or projects/P/regions/R/subnetworks/NAME", g.Subnetwork)
	case g.ServiceAccount != "" && (len(g.ServiceAccount) > 254 || !strings.Contains(g.ServiceAccount, "@")):
		return fmt.Errorf("gce.serviceAccount %q: want an email address", g.ServiceAccount)
	}
	if g.Endpoint != "" {
		u, err := url.Parse(g.Endpoint)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("gce.endpoint %q: want an https URL such as https://HOST/compute/v1/", g.Endpoint)
		}
		if !strings.HasSuffix(g.Endpoint, "/") {
			// The client library resolves API paths against it.
			g.Endpoint += "/"
		}
	}
	switch g.Confidential {
	case "":
		g.Confidential = "TDX"
	case "TDX", "SEV_SNP", "none":
	default:
		return fmt.Errorf("gce.confidential %q: want TDX, SEV_SNP or none", g.Confidential)
	}
	return nil
}

// region is the zone's region ("us-central1-a" -> "us-central1").
func (g *GCEConfig) region() string { return g.Zone[:strings.LastIndexByte(g.Zone, '-')] }

// network and subnetwork are the partial URLs the instance's interface
// names.
func (g *GCEConfig) network() string {
	switch {
	case g.Network == "":
		return "global/networks/default"
	case !strings.Contains(g.Network, "/"):
		return "global/networks/" + g.Network
	}
	return g.Network
}

func (g *GCEConfig) subnetwork() string {
	if g.Subnetwork != "" && !strings.Contains(g.Subnetwork, "/") {
		return "regions/" + g.region() + "/subnetworks/" + g.Subnetwork
	}
	return g.Subnetwork
}
