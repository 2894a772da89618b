// Package attest produces and checks the hardware evidence that binds an
// attested-runner environment key to a measured boot.
//
// Two sides, kept apart as go-tpm-tools keeps client/ and server/:
//
//   - Collect (collect*.go, in the VM): a Collector owns the TPM (any
//     io.ReadWriter: /dev/tpmrm0, the go-tpm-tools simulator, a swtpm
//     socket) or the TDX guest interface. It creates the environment key
//     (TPM: a non-exportable P-256 key in the null hierarchy, certified by
//     the AK; TDX: a key in agent memory bound by REPORTDATA), an X25519 HPKE
//     key for sealed secrets, and a canonical event log (CEL) of lifecycle
//     events extended into PCR 13 / RTMR 3. It answers Challenges with
//     Evidence: a quote whose qualifying data binds the challenge and both
//     keys, the firmware event log, the CEL.
//
//   - Verify (verify*.go, pure functions, no device): checks Evidence
//     against a Challenge and a Policy and returns Claims. See Verify for
//     the exact list of checks and of what it does not check.
//
// What it trusts: the attestation keys and AK/TDX roots in the Policy, and
// the reference values (images, agent digests) the Policy carries, which the
// caller must have taken from verified image provenance (BuildEnv
// L2.ref-values). Nothing in Evidence is trusted before Verify returns.
//
// What it guarantees: Verify fails closed. An empty policy, an empty event
// log, an unknown event, a missing register or any mismatch is an error that
// wraps one sentinel from errors.go. Every input has a size limit
// (limits.go) and a fuzz target.
//
// Requirement map (spec/buildenv-draft-summary.md): collection is
// L2.agent-quote / L3.hw-quote; Verify is the check behind
// L2.verify-before-dispatch and L3.verify-hw-before-dispatch; the CEL's
// job-start event is the separator of L2.agent-dispatch.
package attest
