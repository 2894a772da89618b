// Package provenance builds, signs and verifies the SLSA v1 provenance an
// attested-runner environment produces, and the certificates and
// attestations around it.
//
// Three signed documents, all in-toto statements in DSSE sigstore bundles
// (media type v0.3, no Fulcio or Rekor needed, though the provenance may
// use them: see below):
//
//   - The environment certificate (envcert.go): a SLSA VSA the gate signs at
//     admission, whose subject is the environment key. It records the
//     evidence digest, the reference image and agent matched, the AK, the
//     runner, labels, validity and the BuildEnv level verified (BuildEnv
//     L2.verify-before-dispatch, L3.verify-hw-before-dispatch).
//   - The dispatch attestation (dispatch.go): a SCAI attribute report the
//     agent signs with the environment key when a job is dispatched, after
//     the job-start event, with a hardware quote over it (L2.agent-dispatch,
//     L3.dispatch-includes-hw).
//   - The provenance (statement.go, sign.go): SLSA provenance v1 of build
//     type BuildType (docs/build-type.md), signed with the environment key.
//
// Design choice: the hardware evidence rides in runDetails.byproducts, not
// in a separate SCAI statement, so one bundle per artifact is self-contained
// for offline verification: the environment certificate (the gate's
// verdict) and a response-time quote. The quote's challenge is the SHA-256
// of the statement without that byproduct in RFC 8785 canonical JSON
// (canonical.go, docs/build-type.md); it
// binds inputs and outputs to the hardware state at signing time and
// cannot be replayed onto another statement (seed: response-time
// attestation).
//
// Keyless provenance (keylesssign.go, keyless.go): with the job's OIDC
// token, SignKeyless has Fulcio certify the environment key itself for the
// job's workflow identity, checks that identity against the recorded job
// before signing, and records the DSSE in Rekor, so that cosign and gh
// understand the bundle. The certificate adds a workflow identity; only
// the environment certificate and the quote still say what machine
// signed, and Verify checks them for keyless bundles as for any other.
//
// What Verify trusts: the gate keys given as TrustedGateRoots (or, in
// evidence mode, the reference values and AK roots given instead). What it
// guarantees: every check in Verify's doc comment, failing closed with a
// sentinel error from errors.go, within MaxBundleSize. It does not trust
// anything in a bundle before the signature over it verified with a key one
// of those roots certified.
package provenance
