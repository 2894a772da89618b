// Package e2e holds whole-system tests: gate, agent, fake GitHub, fake
// Runner.Listener and a TPM as separate processes.
package e2e
