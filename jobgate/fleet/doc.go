// Package fleet launches, pools and reaps attested runner VMs for the gate
// (jobgate): the part an org admin would otherwise write with ARC or GARM,
// which attest nothing.
//
// Demand comes from GitHub App webhooks (workflow_job queued, in_progress,
// completed; X-Hub-Signature-256 checked in constant time, size-limited,
// duplicate deliveries ignored, other events harmless no-ops) and from a
// periodic reconcile that also recovers the deliveries the gate never
// received (the App's delivery list), so a lost webhook costs latency, not a
// stuck job. A queued job whose labels a pool's labels cover creates demand
// for that pool; each pool keeps minIdle VMs warm, never more than maxTotal,
// launches at a bounded rate and stops launching while the installation's
// GitHub request quota is low.
//
// Before every launch the fleet verifies the pool image's signed
// provenance against the exact bytes the VM will boot and audits a signed
// launch VSA (BuildEnv L1.verify-before-launch, L2.host-verifies-image); a
// one-byte change to a boot file refuses the launch before any VM starts.
//
// The fleet follows each VM through its life in the gate's Store (so any
// replica can reconcile; one reconciles a pool at a time, under a lease):
// launching -> admitted (the agent names its VM, which the gate admits once,
// only while launching, with the AK the provider enrolled) -> busy (its
// runner took a job) -> done (the agent deregistered) -> destroyed. A VM
// that does not admit before its deadline, idles past its TTL, runs a job
// past its limit, or has lost its runner is destroyed; a runner whose VM is
// gone is removed from GitHub. Every decision is one audit record.
//
// Providers (launch, destroy, list) are behind Provider: qemu (one QEMU,
// OVMF and swtpm per VM on the gate's host, KVM when a bounded probe shows
// it works, TCG otherwise) and gce (Compute Engine confidential VMs).
//
// What it trusts: the gate's configuration (pools, image signers), the
// provider's word about which VMs run. What it guarantees: no VM boots an
// image whose signed provenance does not cover its exact files, and no VM
// or runner outlives its purpose unnoticed: each is destroyed and audited.
package fleet
