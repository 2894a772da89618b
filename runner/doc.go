// Package runner is the in-VM agent: the wrapper around the GitHub runner
// that makes a self-hosted runner an attested, single-use build environment.
//
// Life of an agent (Agent.Run), each step citing the requirement it serves:
//
//  1. Boot: extend agent-start (its own binary digest), create the
//     environment key and HPKE key, extend env-key (BuildEnv L2.agent-quote).
//  2. Admission: challenge -> evidence -> admit at the gate, with bounded
//     retries, backoff and jitter, until AdmissionDeadline; never admitted
//     means never registered (fail closed). The JIT configuration arrives
//     sealed to the HPKE key and is opened in memory only.
//  3. The GitHub runner (bin/Runner.Listener run) starts as the unprivileged
//     runner user, the JIT configuration in ACTIONS_RUNNER_INPUT_JITCONFIG
//     (never on disk, never in argv), the job hooks pointing at scripts that
//     report to this agent over its unix socket (peer uid checked).
//  4. Job start: the agent records the job the runner actually received,
//     reads once, into memory, the actions the runner downloaded from its
//     Worker log (ReadWorkerActions: before any job step, so the job can
//     neither forge nor rewrite them; anything not understood marks them
//     missing), extends job-start (the separator) and signs a dispatch
//     attestation before the hook returns (L2.agent-dispatch,
//     L3.dispatch-includes-hw). A second job start is refused: single use.
//  5. The job-side action asks the agent to attest files; the agent opens
//     and hashes them itself inside the workspace (os.Root: no escapes), and
//     signs SLSA provenance with a response-time quote (provenance.Sign).
//  6. Teardown, once, on job completion, runner exit, idle TTL, job timeout
//     or signal: stop the runner, extend teardown, sign the deregistration,
//     destroy the keys, deregister at the gate, power off.
//
// What the agent trusts: the gate (over the TLS channel it is configured
// with) and the measured image it runs from. What it guarantees: the job
// never reaches the TPM, the keys, or the agent's state; every provenance it
// signs names the job the runner received and the files it hashed itself.
package runner
