package fleet

import (
	"errors"
	"fmt"
	"regexp"
)

// GCEConfig runs a pool's VMs as Compute Engine confidential VMs: Shielded
// VM (vTPM, Secure Boot, measured boot) with Intel TDX or AMD SEV-SNP.
// The image is a GCE image made from the pool's signed UKI; the gate
// trusts each VM's vTPM attestation key as Compute Engine reports it
// (instances.getShieldedInstanceIdentity) for that VM only.
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
	// before every launch against the file the provenance covers.
	Image string `json:"image"`
	// Network and Subnetwork (defaults: the project's default network).
	Network    string `json:"network,omitempty"`
	Subnetwork string `json:"subnetwork,omitempty"`
	// ServiceAccount the VMs run as (default: none; the agent needs no
	// Google credentials).
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// CredentialsFile is the gate's service account key (default:
	// Application Default Credentials).
	CredentialsFile string `json:"credentialsFile,omitempty"`
	// Endpoint overrides the Compute Engine API URL (a private endpoint).
	Endpoint string `json:"endpoint,omitempty"`
}

var (
	gceName  = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)
	gceImage = regexp.MustCompile(`^projects/[a-z][-a-z0-9.:]{0,62}/global/images/[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)
)

func (g *GCEConfig) validate() error {
	switch {
	case g.Project == "" || g.Zone == "":
		return errors.New("gce.project and gce.zone are required")
	case !gceName.MatchString(g.Zone):
		return fmt.Errorf("gce.zone %q", g.Zone)
	case !gceImage.MatchString(g.Image):
		return fmt.Errorf("gce.image %q: want projects/PROJECT/global/images/NAME", g.Image)
	}
	if g.MachineType == "" {
		g.MachineType = "c3-standard-4"
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
