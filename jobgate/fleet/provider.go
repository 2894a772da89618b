package fleet

import (
	"context"
	"crypto"
)

// Provider runs VMs. Pool logic knows nothing else about where they run:
// further providers (Azure, libvirt) implement these three methods.
type Provider interface {
	// Kind names the provider ("qemu", "gce") in records and metrics.
	Kind() string
	// Launch starts a VM named req.Name from req.Boot (files already
	// verified against the image's signed provenance). The VM's agent must
	// learn its name (QEMU fw_cfg, the cloud's instance name). It returns
	// once the VM is starting.
	Launch(ctx context.Context, req *LaunchRequest) (*Launched, error)
	// Destroy stops and deletes a VM; an unknown or already gone VM is
	// not an error.
	Destroy(ctx context.Context, name string) error
	// List returns the provider's VMs of this fleet (running or not yet
	// deleted).
	List(ctx context.Context) ([]Instance, error)
}

// LaunchRequest is one VM to start.
type LaunchRequest struct {
	Name string
	Pool *PoolConfig
	Boot *BootFiles
}

// Launched is what a provider knows of a VM it started.
type Launched struct {
	// AK is the attestation key of the VM's TPM when the provider made the
	// TPM itself (a local fleet): the gate trusts it for that VM only.
	AK crypto.PublicKey
}

// Instance is one VM as the provider lists it.
type Instance struct {
	Name string
	// Running is false for a VM that stopped but still exists (a powered
	// off cloud instance).
	Running bool
}
