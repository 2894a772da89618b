package fakesigstore

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"
	"github.com/go-openapi/runtime"
	"github.com/sigstore/rekor/pkg/generated/models"
	"github.com/sigstore/rekor/pkg/types"
	_ "github.com/sigstore/rekor/pkg/types/dsse/v0.0.1"         // the entry kind keyless bundles use
	_ "github.com/sigstore/rekor/pkg/types/hashedrekord/v0.0.1" // and the one for blobs
	rekorutil "github.com/sigstore/rekor/pkg/util"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Rekor is a transparency log speaking Rekor's v1 write API.
type Rekor struct {
	URL    string
	Key    *ecdsa.PrivateKey
	LogID  []byte // SHA-256 of the key's SubjectPublicKeyInfo
	treeID int64

	mu     sync.Mutex
	leaves [][]byte // RFC 6962 leaf hashes
	// Refuse, if set, makes every write fail with 500.
	Refuse bool
}

// NewRekor serves a log until the test ends.
func NewRekor(t testing.TB) *Rekor {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	id := sha256.Sum256(spki)
	rk := &Rekor{Key: key, LogID: id[:], treeID: 1193050959916656506}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/log/entries", rk.create)
	srv := httptest.NewServer(mux)
	rk.URL = srv.URL
	t.Cleanup(srv.Close)
	return rk
}

// Size is the number of entries in the log.
func (rk *Rekor) Size() int {
	rk.mu.Lock()
	defer rk.mu.Unlock()
	return len(rk.leaves)
}

func (rk *Rekor) create(w http.ResponseWriter, r *http.Request) {
	rk.mu.Lock()
	refuse := rk.Refuse
	rk.mu.Unlock()
	if refuse {
		fail(w, http.StatusInternalServerError, "log unavailable")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	pe, err := models.UnmarshalProposedEntry(bytes.NewReader(body), runtime.JSONConsumer())
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	// Rekor's own types validate the entry (for dsse: the envelope's
	// signatures against the verifiers) and canonicalize it.
	entry, err := types.CreateVersionedEntry(pe)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	canon, err := types.CanonicalizeEntry(r.Context(), entry)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	leaf := leafHash(canon)
	rk.mu.Lock()
	rk.leaves = append(rk.leaves, leaf)
	index := int64(len(rk.leaves) - 1)
	leaves := append([][]byte(nil), rk.leaves...)
	rk.mu.Unlock()

	size := uint64(len(leaves))
	rootHash := treeHash(leaves)
	var hashes []string
	for _, h := range inclusionPath(int(index), leaves) {
		hashes = append(hashes, hex.EncodeToString(h))
	}
	signer, err := signature.LoadECDSASignerVerifier(rk.Key, crypto.SHA256)
	if err != nil {
		fail(w, http.StatusInternalServerError, "%v", err)
		return
	}
	host := "rekor.local"
	if u, err := url.Parse(rk.URL); err == nil {
		host = u.Host
	}
	checkpoint, err := rekorutil.CreateAndSignCheckpoint(r.Context(), host, rk.treeID, size, rootHash, signer)
	if err != nil {
		fail(w, http.StatusInternalServerError, "%v", err)
		return
	}
	integrated := time.Now().Unix()
	logID := hex.EncodeToString(rk.LogID)
	set, err := rk.signEntryTimestamp(base64.StdEncoding.EncodeToString(canon), integrated, logID, index)
	if err != nil {
		fail(w, http.StatusInternalServerError, "%v", err)
		return
	}
	cp := string(checkpoint)
	rootHex := hex.EncodeToString(rootHash)
	treeSize := int64(size)
	uuid := hex.EncodeToString(leaf)
	anon := models.LogEntryAnon{
		Body: base64.StdEncoding.EncodeToString(canon), IntegratedTime: &integrated, LogID: &logID, LogIndex: &index,
		Verification: &models.LogEntryAnonVerification{
			InclusionProof:       &models.InclusionProof{Checkpoint: &cp, Hashes: hashes, LogIndex: &index, RootHash: &rootHex, TreeSize: &treeSize},
			SignedEntryTimestamp: set,
		},
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("ETag", uuid)
	w.Header().Set("Location", "/api/v1/log/entries/"+uuid)
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(models.LogEntry{uuid: anon})
}

// signEntryTimestamp is Rekor's SET: the log key's signature over the
// canonical JSON of body, integrated time, log id and index.
func (rk *Rekor) signEntryTimestamp(body string, integrated int64, logID string, index int64) ([]byte, error) {
	b, err := json.Marshal(map[string]any{"body": body, "integratedTime": integrated, "logID": logID, "logIndex": index})
	if err != nil {
		return nil, err
	}
	canon, err := jsoncanonicalizer.Transform(b)
	if err != nil {
		return nil, err
	}
	d := sha256.Sum256(canon)
	return ecdsa.SignASN1(rand.Reader, rk.Key, d[:])
}

// RFC 6962 Merkle tree hashing.
func leafHash(b []byte) []byte {
	h := sha256.Sum256(append([]byte{0}, b...))
	return h[:]
}

func nodeHash(l, r []byte) []byte {
	h := sha256.New()
	h.Write([]byte{1})
	h.Write(l)
	h.Write(r)
	return h.Sum(nil)
}

// split is the largest power of two smaller than n (n > 1).
func split(n int) int {
	k := 1
	for k<<1 < n {
		k <<= 1
	}
	return k
}

func treeHash(leaves [][]byte) []byte {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := split(len(leaves))
	return nodeHash(treeHash(leaves[:k]), treeHash(leaves[k:]))
}

// inclusionPath is RFC 6962 PATH(m, D[n]), leaf to root.
func inclusionPath(m int, leaves [][]byte) [][]byte {
	if len(leaves) <= 1 {
		return nil
	}
	k := split(len(leaves))
	if m < k {
		return append(inclusionPath(m, leaves[:k]), treeHash(leaves[k:]))
	}
	return append(inclusionPath(m-k, leaves[k:]), treeHash(leaves[:k]))
}
