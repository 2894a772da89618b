package attest

// SetBootLogCache switches the boot-log cache, for the cold-path benchmark.
func SetBootLogCache(on bool) { bootCacheEnabled = on }

// WantStatusForTest is wantStatus (inspect_test.go), for the external tests.
var WantStatusForTest = wantStatus
