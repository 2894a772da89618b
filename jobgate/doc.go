// Package jobgate is the control plane: it verifies environment evidence,
// applies policy, and only then mints single-use (JIT) GitHub runners whose
// configuration it seals to the attested environment.
package jobgate
