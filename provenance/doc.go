// Package provenance builds, signs and verifies SLSA v1 provenance carrying
// hardware evidence from an attested environment.
package provenance
