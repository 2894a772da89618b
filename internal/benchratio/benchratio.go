// Package benchratio reports a benchmark's cost as a ratio to a baseline
// measured in the same process, so results compare across noisy machines.
package benchratio

import (
	"sync"
	"syscall"
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

// CPU reports metric "cpu-ns/op": the CPU time (user + system) this
// process and the children it waited for used per op of b's loop. On a
// shared machine it stays meaningful where wall time does not: a run
// queue inflates ns/op, not CPU time. Call the returned func right after
// the loop.
func CPU(b *testing.B) func() {
	b.Helper()
	start := cpuTime()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

// CPUPerOp is the CPU time (this process and waited-for children) of op,
// in ns, averaged over n runs.
func CPUPerOp(n int, op func()) float64 {
	start := cpuTime()
	for range n {
		op()
	}
	return float64(cpuTime()-start) / float64(n)
}

func cpuTime() int64 {
	var total int64
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if syscall.Getrusage(who, &ru) == nil {
			total += ru.Utime.Nano() + ru.Stime.Nano()
		}
	}
	return total
}
