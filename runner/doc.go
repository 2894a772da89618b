// Package runner is the in-VM agent: it attests the VM at boot, gets
// admitted by the gate, launches the GitHub runner as an unprivileged user,
// records the job it actually receives, signs provenance with the
// environment key, and tears the VM down.
package runner
