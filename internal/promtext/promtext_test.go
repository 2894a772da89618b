package promtext

import (
	"strings"
	"testing"
)

func TestHistogram(t *testing.T) {
	h := NewHistogram(0.5, 1, 2.5)
	for _, v := range []float64{0.1, 0.7, 3} {
		h.Observe(v)
	}
	var b strings.Builder
	h.Write(&b, "x_seconds", `pool="p"`)
	want := `x_seconds_bucket{pool="p",le="0.5"} 1
x_seconds_bucket{pool="p",le="1"} 2
x_seconds_bucket{pool="p",le="2.5"} 2
x_seconds_bucket{pool="p",le="+Inf"} 3
x_seconds_sum{pool="p"} 3.8
x_seconds_count{pool="p"} 3
`
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	NewHistogram(1).Write(&b, "y", "")
	if want := "y_bucket{le=\"1\"} 0\ny_bucket{le=\"+Inf\"} 0\ny_sum 0\ny_count 0\n"; b.String() != want {
		t.Fatalf("got %q", b.String())
	}
}

func TestCounter2(t *testing.T) {
	var b strings.Builder
	Counter2(&b, "c_total", "help", "a", "b", map[[2]string]uint64{{"z", "1"}: 2, {"a", "2"}: 1})
	want := "# HELP c_total help\n# TYPE c_total counter\nc_total{a=\"a\",b=\"2\"} 1\nc_total{a=\"z\",b=\"1\"} 2\n"
	if b.String() != want {
		t.Fatalf("got %q", b.String())
	}
}
