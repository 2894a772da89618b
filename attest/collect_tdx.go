package attest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"

	tdxclient "github.com/google/go-tdx-guest/client"
	"github.com/google/go-tdx-guest/rtmr"
)

// TDXOptions are the hardware hooks of a TDX collector. Zero values use the
// real interfaces: configfs-tsm (falling back to /dev/tdx_guest) for quotes,
// the kernel's RTMR interface for extends (go-tdx-guest's rtmr.ExtendDigest:
// configfs-tsm's rtmrs where the kernel has them, as Container-Optimized
// OS's does, else the tdx_guest sysfs measurement files of Linux 6.16 and
// later), and the ACPI CCEL table.
type TDXOptions struct {
	Quote      func(reportData [64]byte) ([]byte, error)
	ExtendRTMR func(index int, sha384 []byte) error
	ReadCCEL   func() (table, log []byte, err error)
}

// TDXCollector collects evidence inside an Intel TDX trust domain. The
// environment key lives in agent memory, bound to the TD by REPORTDATA.
type TDXCollector struct {
	bootState
	opts TDXOptions
	env  *ecdsa.PrivateKey
}

// The kernel interfaces DetectTDX looks for.
var (
	tdxGuestDevice   = "/dev/tdx_guest"
	tdxRTMRSysfs     = "/sys/class/misc/tdx_guest/measurements/rtmr3:sha384"
	tdxRTMRConfigfs  = "/sys/kernel/config/tsm/rtmrs"
	tdxQuoteProvider = func() error {
		qp, err := tdxclient.GetQuoteProvider()
		if err != nil {
			return err
		}
		return qp.IsSupported()
	}
)

// DetectTDX reports whether this machine can produce TDX quotes and extend
// RTMR 3 (the lifecycle register), with the reason when it cannot
// (wrapping ErrNoTDX). Quotes alone are not enough: without an RTMR
// interface the lifecycle log could not be bound to the quote, so the
// collector would fail at its first extend, after the TD had booted.
func DetectTDX() error {
	quotes := tdxQuoteProvider() == nil || exists(tdxGuestDevice)
	if !quotes {
		return fmt.Errorf("%w: neither configfs-tsm (/sys/kernel/config/tsm/report) nor %s is available", ErrNoTDX, tdxGuestDevice)
	}
	if !exists(tdxRTMRSysfs) && !exists(tdxRTMRConfigfs) {
		return fmt.Errorf("%w: this TD's kernel cannot extend RTMRs from user space: neither %s (Linux 6.16 or later, tdx_guest module) nor %s (configfs-tsm rtmrs) exists",
			ErrNoTDX, tdxRTMRSysfs, tdxRTMRConfigfs)
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// NewTDXCollector returns a collector for this TD. With zero options it
// requires TDX hardware and says so clearly (ErrNoTDX) when absent.
func NewTDXCollector(opts TDXOptions) (*TDXCollector, error) {
	if opts.Quote == nil || opts.ExtendRTMR == nil || opts.ReadCCEL == nil {
		if err := DetectTDX(); err != nil {
			return nil, err
		}
	}
	if opts.Quote == nil {
		opts.Quote = hardwareQuote
	}
	if opts.ExtendRTMR == nil {
		opts.ExtendRTMR = rtmr.ExtendDigest
	}
	if opts.ReadCCEL == nil {
		opts.ReadCCEL = func() ([]byte, []byte, error) {
			table, err := os.ReadFile("/sys/firmware/acpi/tables/CCEL")
			if err != nil {
				return nil, nil, err
			}
			log, err := os.ReadFile("/sys/firmware/acpi/tables/data/CCEL")
			return table, log, err
		}
	}
	return &TDXCollector{opts: opts, bootState: bootState{log: newLifecycleLog(tdxLayout)}}, nil
}

// Kind implements Collector.
func (t *TDXCollector) Kind() Kind { return KindTDX }

// Extend implements Collector: SHA-384 into RTMR 3.
func (t *TDXCollector) Extend(e Event) error {
	return t.extend(e, func(_ crypto.Hash, _ int, digest []byte) error {
		return t.opts.ExtendRTMR(LifecycleRTMR, digest)
	})
}

// GenerateKeys implements Collector.
func (t *TDXCollector) GenerateKeys() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.env != nil || t.closed {
		return errors.New("environment keys already generated for this boot")
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	spki, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return err
	}
	hk, err := NewHPKEKey()
	if err != nil {
		return err
	}
	t.env, t.spki, t.hpke = k, spki, hk
	return nil
}

// Signer implements Collector.
func (t *TDXCollector) Signer() crypto.Signer { return tdxSigner{t} }

// Collect implements Collector: a TD quote whose REPORTDATA binds the
// challenge and both keys, plus the CCEL and the lifecycle log.
func (t *TDXCollector) Collect(ch Challenge) (*Evidence, error) {
	if err := t.lockForCollect(ch); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	hpkePub := t.hpke.PublicKey()
	quote, err := t.opts.Quote(ch.TDXReportData(t.spki, hpkePub))
	if err != nil {
		return nil, fmt.Errorf("TDX quote: %w", err)
	}
	table, log, err := t.opts.ReadCCEL()
	if err != nil {
		return nil, fmt.Errorf("reading the CCEL: %w", err)
	}
	cel, err := t.log.encode()
	if err != nil {
		return nil, err
	}
	return &Evidence{
		Format:        EvidenceFormat,
		Kind:          KindTDX,
		EnvKey:        t.spki,
		HPKEPublicKey: hpkePub,
		CEL:           cel,
		TDX:           &TDXEvidence{Quote: quote, CCELTable: table, CCEL: log},
	}, nil
}

// Close implements Collector.
func (t *TDXCollector) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	t.env = nil
	if t.hpke != nil {
		t.hpke.Destroy()
	}
	return nil
}

type tdxSigner struct{ t *TDXCollector }

func (s tdxSigner) Public() crypto.PublicKey {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	if s.t.env == nil {
		return nil
	}
	return &s.t.env.PublicKey
}

func (s tdxSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	if s.t.env == nil {
		return nil, ErrKeyDestroyed
	}
	return s.t.env.Sign(r, digest, opts)
}

// hardwareQuote asks this TD's quote provider (configfs-tsm, else
// /dev/tdx_guest, as go-tdx-guest chooses) for a quote.
func hardwareQuote(rd [64]byte) ([]byte, error) {
	qp, err := tdxclient.GetQuoteProvider()
	if err != nil {
		return nil, err
	}
	return tdxclient.GetRawQuote(qp, rd)
}

// TDXHardwareQuote returns this TD's quote function, refusing clearly
// (ErrNoTDX) on a machine that is no TDX guest. It is what TPMOptions.TDX
// takes on a TDX confidential VM with a vTPM. Not tested on hardware: no
// TDX machine was available.
func TDXHardwareQuote() (func(reportData [64]byte) ([]byte, error), error) {
	if err := DetectTDX(); err != nil {
		return nil, err
	}
	return hardwareQuote, nil
}
