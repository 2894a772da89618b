package provenance

// SignPayloadForTest exposes signPayload to the tests.
var SignPayloadForTest = signPayload
