package jobgate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// AuditRecord is one decision of the gate. Records form a hash chain: each
// carries the hash of the previous one, so a deleted, reordered or edited
// record breaks verification (VerifyAudit). The chain detects tampering by
// anyone without the ability to rewrite every later record; ship the log
// (or its head hash) off the gate to make rewriting detectable too.
type AuditRecord struct {
	Seq            uint64    `json:"seq"`
	Time           time.Time `json:"time"`
	Action         string    `json:"action"` // admit, deregister, reconcile, ...
	Result         string    `json:"result"` // accepted, rejected, removed, failed
	Reason         string    `json:"reason,omitempty"`
	Remote         string    `json:"remote,omitempty"`
	KeyDigest      string    `json:"keyDigest,omitempty"`
	EvidenceDigest string    `json:"evidenceDigest,omitempty"`
	RunnerName     string    `json:"runnerName,omitempty"`
	RunnerID       int64     `json:"runnerId,omitempty"`
	Detail         string    `json:"detail,omitempty"`
	// Outcome is how the environment ended, as its agent reported it at
	// deregistration (done, failed, image_out_of_date).
	Outcome string `json:"outcome,omitempty"`
	// Attestation is a signed statement the decision produced, e.g. the
	// launch VSA of a fleet launch (a sigstore bundle).
	Attestation []byte `json:"attestation,omitempty"`
	Prev        string `json:"prev"`
	Hash        string `json:"hash"`
}

// chainHash is SHA-256(prev hash || JSON of the record without its hash).
func (r AuditRecord) chainHash() (string, error) {
	r.Hash = ""
	b, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write([]byte(r.Prev))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ErrAuditChain: the audit log's hash chain is broken.
var ErrAuditChain = errors.New("audit log hash chain broken")

// VerifyAudit walks the whole audit log and checks sequence numbers and the
// hash chain. It returns the number of records and the head hash.
func VerifyAudit(ctx context.Context, s Store) (int, string, error) {
	var n int
	prev := ""
	err := s.AuditLog(ctx, func(r AuditRecord) error {
		n++
		if r.Seq != uint64(n) {
			return fmt.Errorf("%w: record %d has sequence %d", ErrAuditChain, n, r.Seq)
		}
		if r.Prev != prev {
			return fmt.Errorf("%w: record %d does not follow record %d", ErrAuditChain, r.Seq, r.Seq-1)
		}
		h, err := r.chainHash()
		if err != nil {
			return err
		}
		if h != r.Hash {
			return fmt.Errorf("%w: record %d was edited", ErrAuditChain, r.Seq)
		}
		prev = r.Hash
		return nil
	})
	return n, prev, err
}

// WriteAuditJSONL writes the audit log as JSON lines.
func WriteAuditJSONL(ctx context.Context, s Store, w io.Writer) error {
	enc := json.NewEncoder(w)
	return s.AuditLog(ctx, func(r AuditRecord) error { return enc.Encode(r) })
}
