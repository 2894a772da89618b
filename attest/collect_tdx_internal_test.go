package attest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDetectTDX: a TD is usable only when it can both quote and extend
// RTMR 3; each missing kernel interface is named. The interfaces are files
// in a temp dir standing in for /dev and /sys (no TDX hardware here).
func TestDetectTDX(t *testing.T) {
	saved := []string{tdxGuestDevice, tdxRTMRSysfs, tdxRTMRConfigfs}
	savedQP := tdxQuoteProvider
	t.Cleanup(func() {
		tdxGuestDevice, tdxRTMRSysfs, tdxRTMRConfigfs = saved[0], saved[1], saved[2]
		tdxQuoteProvider = savedQP
	})
	tdxQuoteProvider = func() error { return errors.New("no configfs-tsm report provider") }
	for _, tc := range []struct {
		name    string
		present []string // of device, sysfs, configfs
		msg     string   // "" = usable
	}{
		{"not a TD", nil, "neither configfs-tsm"},
		{"quotes, but a kernel without an RTMR interface (6.7-6.15)", []string{"device"}, "Linux 6.16 or later"},
		{"quotes and the sysfs RTMRs (6.16+)", []string{"device", "sysfs"}, ""},
		{"quotes and configfs-tsm rtmrs (COS)", []string{"device", "configfs"}, ""},
		{"RTMRs but no way to quote", []string{"sysfs", "configfs"}, "neither configfs-tsm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			paths := map[string]*string{"device": &tdxGuestDevice, "sysfs": &tdxRTMRSysfs, "configfs": &tdxRTMRConfigfs}
			for name, p := range paths {
				*p = filepath.Join(dir, name)
			}
			for _, name := range tc.present {
				if err := os.WriteFile(*paths[name], nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := DetectTDX()
			if tc.msg == "" {
				if err != nil {
					t.Fatalf("got %v, want usable", err)
				}
				return
			}
			if !errors.Is(err, ErrNoTDX) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want ErrNoTDX saying %q", err, tc.msg)
			}
		})
	}
	// With zero options the collector refuses on a machine that is no TD.
	tdxGuestDevice, tdxRTMRSysfs, tdxRTMRConfigfs = saved[0], saved[1], saved[2]
	tdxQuoteProvider = savedQP
	if DetectTDX() == nil {
		t.Skip("this machine is a TDX guest: the refusal without TDX cannot be shown here")
	}
	if _, err := NewTDXCollector(TDXOptions{}); !errors.Is(err, ErrNoTDX) {
		t.Fatalf("NewTDXCollector on a machine without TDX: %v", err)
	}
}
