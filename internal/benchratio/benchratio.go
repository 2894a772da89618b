// Package benchratio reports a benchmark's cost as a ratio to a baseline
// measured in the same process, so results compare across noisy machines.
package benchratio

import (
	"sync"
	"testing"
	"time"
)

var (
	mu    sync.Mutex
	cache = map[string]float64{}
)

// Report adds metric "x-<name>" to b: b's ns/op divided by the baseline's
// ns/op. The baseline op is timed once per process (for at least 300 ms)
// and cached by name. Call Report after b's timed loop.
func Report(b *testing.B, name string, op func()) {
	b.Helper()
	if b.N == 0 {
		return
	}
	per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.StopTimer()
	b.ReportMetric(per/Baseline(name, op), "x-"+name)
}

// Baseline returns op's cost in ns, measured once per process.
func Baseline(name string, op func()) float64 {
	mu.Lock()
	defer mu.Unlock()
	if base, ok := cache[name]; ok {
		return base
	}
	op() // warm up
	n := 0
	start := time.Now()
	for time.Since(start) < 300*time.Millisecond {
		for range 16 {
			op()
		}
		n += 16
	}
	base := float64(time.Since(start).Nanoseconds()) / float64(n)
	cache[name] = base
	return base
}
