// Package harness runs the whole attested-runner system as separate
// processes on one machine, for the end-to-end tests in package e2e, the
// load test and the demo (e2e/cmd/demo):
//
//   - the real binaries (jobgate, attested-runner, attested-verify) and the
//     fake Runner.Listener, built once with CGO_ENABLED=0 (Build) or taken
//     from a directory (FromDir);
//   - a fake GitHub (package fakegithub) in this process, with the App key
//     the gate uses in a 0600 file (StartGitHub);
//   - machines: one swtpm process each, into which a real firmware event
//     log is replayed, enrolled by their attestation key, with reference
//     values derived from their PCRs and the agent binary's digest
//     (NewMachine, WriteReferenceValues);
//   - the gate as a process (`jobgate serve`), restartable, with its audit
//     log read through `jobgate audit show` and `jobgate audit verify`;
//   - agents as processes (`attested-runner run --tpm unix:...`) with a
//     runner directory on tmpfs holding the fake listener, a recorded
//     power-off instead of a real one, and their logs;
//   - a recording HTTP proxy in front of the gate, which sees (and, for
//     attacks, may rewrite) every agent request;
//   - the consumer verifier (`attested-verify artifact`).
//
// What it trusts: nothing it tests. Every outcome is observed from outside
// the processes (exit codes, logs, the fake GitHub's state, the audit log,
// files), as an operator would observe it.
//
// Everything here is for tests and demos: the TPMs are software TPMs
// (swtpm), the gate accepts them only because its configuration says
// allowSoftwareTPMUnsafe, and every process and file lives under one
// directory the caller may keep for inspection. Every wait is bounded.
package harness
