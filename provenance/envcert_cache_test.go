package provenance

import "testing"

// TestCertCacheBounded: the verified-certificate cache keeps what it is
// given up to 64 entries and never holds more (a verifier fed many
// certificates does not grow without bound).
func TestCertCacheBounded(t *testing.T) {
	c := &certCache{m: map[[32]byte]*EnvCertificate{}}
	key := func(i int) [32]byte { return [32]byte{byte(i), byte(i >> 8)} }
	for i := range 64 {
		c.put(key(i), &EnvCertificate{RunnerName: "r"})
	}
	for i := range 64 {
		if _, ok := c.get(key(i)); !ok {
			t.Fatalf("entry %d of 64 evicted", i)
		}
	}
	for i := 64; i < 200; i++ {
		c.put(key(i), &EnvCertificate{RunnerName: "r"})
		if n := len(c.m); n > 64 {
			t.Fatalf("%d entries after %d puts, limit 64", n, i+1)
		}
	}
}
