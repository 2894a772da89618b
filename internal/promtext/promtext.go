// Package promtext writes metrics in the Prometheus text exposition format,
// without a client library: the gate needs a few counters, gauges and
// histograms.
package promtext

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
)

// Histogram counts observations into cumulative buckets. Not safe for
// concurrent use: callers hold their own lock.
type Histogram struct {
	Bounds []float64
	counts []uint64
	sum    float64
	n      uint64
}

// NewHistogram returns a histogram with these bucket upper bounds.
func NewHistogram(bounds ...float64) *Histogram { return &Histogram{Bounds: bounds} }

// Observe adds one value.
func (h *Histogram) Observe(v float64) {
	if h.counts == nil {
		h.counts = make([]uint64, len(h.Bounds))
	}
	for i, b := range h.Bounds {
		if v <= b {
			h.counts[i]++
		}
	}
	h.sum += v
	h.n++
}

// Write writes the histogram's samples as name_bucket, name_sum and
// name_count, with labels (`pool="x"`, or "" for none) on each.
func (h *Histogram) Write(w io.Writer, name, labels string) {
	sep := ""
	if labels != "" {
		sep = ","
	}
	for i, b := range h.Bounds {
		var c uint64
		if h.counts != nil {
			c = h.counts[i]
		}
		fmt.Fprintf(w, "%s_bucket{%s%sle=%q} %d\n", name, labels, sep, Float(b), c)
	}
	fmt.Fprintf(w, "%s_bucket{%s%sle=\"+Inf\"} %d\n", name, labels, sep, h.n)
	braces := ""
	if labels != "" {
		braces = "{" + labels + "}"
	}
	fmt.Fprintf(w, "%s_sum%s %s\n%s_count%s %d\n", name, braces, Float(h.sum), name, braces, h.n)
}

// Header writes a metric's HELP and TYPE lines.
func Header(w io.Writer, name, typ, help string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

// Counter2 writes a counter with two labels, samples in label order.
func Counter2(w io.Writer, name, help, l1, l2 string, c map[[2]string]uint64) {
	Header(w, name, "counter", help)
	keys := make([][2]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+"\x00"+keys[i][1] < keys[j][0]+"\x00"+keys[j][1] })
	for _, k := range keys {
		fmt.Fprintf(w, "%s{%s=%q,%s=%q} %d\n", name, l1, k[0], l2, k[1], c[k])
	}
}

// Float formats a sample value as Prometheus expects (integers without a
// decimal point).
func Float(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return fmt.Sprintf("%d", int64(f))
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%f", f), "0"), ".")
}
