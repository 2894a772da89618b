// Package fakegithub is a fake GitHub REST API for tests and the local demo:
// the App, installation-token and self-hosted-runner endpoints a JIT runner
// fleet uses, with GitHub's paths and JSON (go-github v62 types), plus a
// fake-only job queue that the fake Runner.Listener
// (e2e/cmd/fake-runner-listener) takes jobs from.
//
// Serve it with Start (loopback, for tests), Listen / ListenAndServe (the
// demo, see Config) or New plus any http.Server. Every path is served both at
// the root and under /api/v3 (GitHub Enterprise Server layout), so go-github
// works with WithEnterpriseURLs(URL(), URL()) or with BaseURL = URL()+"/",
// and ghinstallation with BaseURL = URL() (or URL()+"/api/v3").
//
// # GitHub endpoints
//
//	POST   /app/installations/{installation_id}/access_tokens   App JWT   -> 201 InstallationToken
//	GET    /app                                                 App JWT   -> App
//	GET    /app/installations/{installation_id}                 App JWT   -> Installation
//	POST   /orgs/{org}/actions/runners/generate-jitconfig       token     -> 201 JITRunnerConfig
//	POST   /repos/{owner}/{repo}/actions/runners/generate-jitconfig
//	GET    /orgs/{org}/actions/runners[?per_page&page&name]    token     -> Runners (+ Link)
//	GET    /repos/{owner}/{repo}/actions/runners[...]
//	GET    /orgs/{org}/actions/runners/{runner_id}             token     -> Runner
//	GET    /repos/{owner}/{repo}/actions/runners/{runner_id}
//	DELETE /orgs/{org}/actions/runners/{runner_id}             token     -> 204
//	DELETE /repos/{owner}/{repo}/actions/runners/{runner_id}
//	POST   /repos/{owner}/{repo}/attestations                  job token -> 201 {"id"} (attestations.go)
//	GET    /repos/{owner}/{repo}/attestations/{subject_digest} job token -> {"attestations"} (+ Link)
//	GET    /orgs/{org}/attestations/{subject_digest}
//
// # GitHub behaviours reproduced
//
//   - App JWT: RS256 signature by the configured App key; iss equal to the
//     App id as a string (ghinstallation) or a number; exp in the future and
//     at most 10 minutes (+60 s skew) ahead; iat at most 60 s in the future.
//     Failures are 401 with GitHub-style messages.
//   - Installation tokens ("ghs_" + 36 characters) live one hour, carry the
//     installation's permissions at issue time, and may be narrowed by
//     permissions or repositories in the request (422 when asking for more).
//     "Authorization: token X" and "Bearer X" are both accepted; a missing
//     header is 401 "Requires authentication", a bad or expired token 401
//     "Bad credentials". Answers carry X-RateLimit-* headers of a 5000/hour
//     window (which the fake never exhausts by itself).
//   - Scope: an organization or repository the installation cannot reach is
//     404, as on GitHub. Organization runner endpoints need
//     organization_self_hosted_runners, repository ones administration: read
//     for GET, write otherwise; short of that, 403 "Resource not accessible
//     by integration" with X-Accepted-GitHub-Permissions.
//   - generate-jitconfig: body keys name, runner_group_id, labels (required)
//     and work_folder; another key is 422 "... is not a permitted key.", a
//     missing one 422 "... wasn't supplied.", bad JSON 400 "Problems parsing
//     JSON", empty name or labels (or over 100 labels) 422, an unknown runner
//     group 404, a name already used by a live runner of the same scope 409
//     "Already exists - A runner with the name NAME already exists." (409 is
//     what GitHub sends; ubicloud/ubicloud#692, runs-on/runs-on#30).
//     The runner is created offline and idle with the labels as custom
//     labels, and the encoded config has the real format (see
//     DecodeJITConfig): `.runner`, `.credentials` (OAuth, clientId,
//     authorizationUrl, requireFipsCryptography) and a fresh RSA key in
//     `.credentials_rsaparams`.
//   - Runner lists are sorted by id, paginated by per_page (default 30, at
//     most 100) and page, with GitHub's Link header (prev, next, last,
//     first) and the name filter. A runner is "online" while a listener holds
//     a session and busy while it runs a job.
//   - DELETE of an unknown runner is 404; of a busy runner 422 `Bad request -
//     Runner "NAME" is still running a job"` (GitHub's text, stray quote
//     included, as quoted in actions-runner-controller). A deleted runner's
//     credentials stop working at once.
//   - A JIT runner is ephemeral: after it reports its job the fake removes it.
//     If it stops renewing a running job for Options.JobLease, the job fails
//     ("lost communication") and the runner goes offline and idle, so that it
//     can be deleted, as GitHub does (after minutes rather than seconds).
//   - Bodies over 1 MiB are 413.
//
// # Not reproduced
//
// GitHub.com's api.github.com host split, conditional requests and ETags,
// GraphQL, webhooks, registration and remove tokens, runner groups' repository
// access lists, label management endpoints, runner_group_id in runner
// answers (go-github v62 has no field for it), automatic clean-up of JIT
// runners that never connect, the real Actions service (broker, pipelines,
// job messages, logs upload), several installations per fake, and exact
// error texts beyond the ones cited above.
//
// # Fault injection and inspection
//
// FailNext / Inject fail the next n matching requests (5xx, or 403/429 as a
// primary rate limit with X-RateLimit-Remaining: 0 and X-RateLimit-Reset, or
// as a secondary one with Retry-After, each with GitHub's error JSON);
// FailNextAfterApply fails them after they took effect; SetLatency delays
// every request; Down drops every connection. Calls, CountCalls, JITMints,
// RunnerDeletes, Runners, Runner, Jobs and JobResult show what happened.
//
// # The fake-only runner protocol (not GitHub)
//
// The real listener talks to the Actions service with a protocol the fake
// does not reproduce. In its place, under the JIT config's serverUrl
// (<base>/_fake/), with the same shape of trust:
//
//	POST   /_fake/oauth2/token                   form: grant_type=client_credentials,
//	       client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer,
//	       client_assertion=<RS256 JWT signed with the runner key: iss = sub = clientId,
//	       aud = authorizationUrl, exp <= 10 min>
//	       -> 200 {"access_token","token_type":"bearer","expires_in":3600}
//	       -> 400 {"error":"invalid_client"} (runner deleted or unknown, bad signature)
//	          or {"error":"invalid_grant"} (wrong aud/sub, expired assertion)
//	POST   /_fake/runners/{id}/session           Bearer access token
//	       -> 201 {"session_id","runner_id","runner_name"}; 409 another session holds
//	          the runner; 404 the runner is gone; 401 bad token
//	DELETE /_fake/runners/{id}/session           + X-Runner-Session -> 204
//	POST   /_fake/runners/{id}/acquire           + X-Runner-Session
//	       -> 200 AcquiredJob {"request_id","lease_seconds","job": Job}: the first
//	          queued job whose labels are all among the runner's and whose
//	          repository is in the runner's scope (first come, first served)
//	       -> 204 nothing queued; 404 runner deleted; 409 not the active session
//	POST   /_fake/runners/{id}/renew             {"request_id"} -> 200; 404 job lost
//	POST   /_fake/runners/{id}/complete          {"request_id","result":"succeeded"|
//	       "failed"|"cancelled"} -> 204, and the runner is removed (ephemeral)
//
// A JIT config therefore serves one session at a time and one job: a second
// session is 409, and after the job the registration is gone (token exchange
// invalid_client, calls 404). RunnerClient is the client side, used by the
// fake listener and by tests.
package fakegithub
