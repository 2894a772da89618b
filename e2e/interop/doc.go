// Package interop runs attested-runner's keyless bundles through Sigstore's
// own programs: real Fulcio (github.com/sigstore/fulcio, ephemeral CA) issues
// the certificate, and cosign verifies the bundle. Each test skips, saying
// so, when its program is not installed (make interop-tools installs both
// with go install).
package interop
