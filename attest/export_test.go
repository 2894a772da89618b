package attest

// SetBootLogCache switches the boot-log cache, for the cold-path benchmark.
func SetBootLogCache(on bool) { bootCacheEnabled = on }
