// Package fakegce is a fake Compute Engine REST API (compute/v1) for tests
// of the fleet's gce provider: the calls it makes, at the paths and with
// the JSON the official client library (google.golang.org/api/compute/v1)
// uses, and the resource types of that library marshalled as the real API
// returns them.
//
// Point the client library at it with
//
//	option.WithEndpoint(server.URL + "/compute/v1/"),
//	option.WithoutAuthentication(), option.WithHTTPClient(server.Client())
//
// # Endpoints
//
//	GET    /compute/v1/projects/{p}/global/images/{image}                          -> Image
//	POST   /compute/v1/projects/{p}/zones/{z}/instances[?requestId]               -> Operation (insert)
//	GET    /compute/v1/projects/{p}/zones/{z}/instances[?filter&maxResults&pageToken] -> InstanceList
//	GET    /compute/v1/projects/{p}/zones/{z}/instances/{name}                    -> Instance
//	DELETE /compute/v1/projects/{p}/zones/{z}/instances/{name}[?requestId]        -> Operation (delete)
//	GET    /compute/v1/projects/{p}/zones/{z}/instances/{name}/getShieldedInstanceIdentity -> ShieldedInstanceIdentity
//	POST   /compute/v1/projects/{p}/zones/{z}/operations/{op}/wait                -> Operation
//	GET    /compute/v1/projects/{p}/zones/{z}/operations/{op}                     -> Operation
//	POST   /token (an OAuth token endpoint for a service account key)           -> access token
//
// # Behaviours reproduced
//
//   - Errors as the API sends them: {"error": {"code", "message",
//     "errors": [{"message", "domain", "reason"}]}} with 404 notFound, 409
//     alreadyExists, 400 invalid (unknown JSON fields in an insert body,
//     a filter it does not understand, a confidential VM that may migrate,
//     an image without the guest OS features the instance needs).
//   - Insert and delete are zone operations: the call returns a RUNNING
//     operation, Wait returns it RUNNING Server.OpWaits times and then
//     DONE, when the instance becomes RUNNING (insert) or is gone
//     (delete). A repeated requestId returns the same operation.
//   - Each instance gets a vTPM identity: fresh RSA 2048 and ECC P-256
//     signing keys (signingKey, eccP256SigningKey) as PEM PUBLIC KEY.
//   - List understands the filter "labels.KEY = VALUE" (quotes optional)
//     and pages by Server.PageSize (or maxResults when smaller).
//
// # Faults
//
// Fail makes matching requests answer with an API error; InsertFailure
// makes the next insert operation end DONE with errors while the instance
// is left behind (TERMINATED), the worst case a caller must clean up.
package fakegce
