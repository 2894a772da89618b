package attest

import (
	"fmt"
	"strings"
)

// Status of one check in an inspection report.
type Status string

// Check statuses.
const (
	StatusPass    Status = "pass"
	StatusFail    Status = "fail"
	StatusSkipped Status = "skipped"
)

// Check is the outcome of one verification step.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
}

// steps records the checks a verification runs. Verify and Inspect share the
// same step functions; only Inspect lets inputs be absent (skipped checks).
type steps struct {
	checks []Check
	// unanchored says why the quote's signer was not checked against a
	// trust anchor (inspection without AK roots); empty when it was.
	unanchored string
}

// run executes one check and records its outcome; an error stops the caller.
func (s *steps) run(name string, f func() (string, error)) error {
	detail, err := f()
	if err != nil {
		return s.fail(name, err)
	}
	s.checks = append(s.checks, Check{Name: name, Status: StatusPass, Detail: detail})
	return nil
}

func (s *steps) fail(name string, err error) error {
	s.checks = append(s.checks, Check{Name: name, Status: StatusFail, Detail: err.Error()})
	return err
}

func (s *steps) skip(name, why string) {
	s.checks = append(s.checks, Check{Name: name, Status: StatusSkipped, Detail: why})
}

func lifecycleString(lc *Lifecycle) string {
	parts := make([]string, len(lc.Events))
	for i, e := range lc.Events {
		parts[i] = e.Type.String()
	}
	return fmt.Sprintf("%s (agent sha256:%x)", strings.Join(parts, " < "), lc.AgentDigest)
}
