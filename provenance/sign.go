package provenance

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"fmt"

	"github.com/attested-runner/attested-runner/attest"
	intoto "github.com/in-toto/attestation/go/v1"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Quoter produces hardware evidence answering a challenge; an
// attest.Collector is one.
type Quoter interface {
	Collect(attest.Challenge) (*attest.Evidence, error)
}

// Sign turns a Build into signed provenance: the SLSA v1 statement, plus a
// response-time quote whose challenge is the digest of that statement
// (binding inputs and outputs to the hardware state, verifiable offline), all
// signed with the environment key as a DSSE sigstore bundle (media type
// v0.3). It returns the bundle's JSON.
func Sign(ctx context.Context, b *Build, key crypto.Signer, q Quoter) ([]byte, error) {
	st, err := b.statement()
	if err != nil {
		return nil, err
	}
	payload, err := attachQuote(st, q, attest.StatementChallenge, provenanceQuote)
	if err != nil {
		return nil, err
	}
	return signPayload(ctx, payload, key)
}

// quoteSlot says where a statement kind carries its quote, for attaching
// (signer) and for removing before digesting (verifier).
type quoteSlot struct {
	name   string
	attach func(st *intoto.Statement, rd *structpb.Value) error
	remove func(statement map[string]any) map[string]any
}

// provenanceQuote: SLSA provenance carries it in runDetails.byproducts.
var provenanceQuote = quoteSlot{
	name: ResponseQuoteProduct,
	attach: func(st *intoto.Statement, rd *structpb.Value) error {
		runDetails := st.GetPredicate().GetFields()["runDetails"].GetStructValue()
		if runDetails == nil {
			return fmt.Errorf("statement has no runDetails")
		}
		list := runDetails.GetFields()["byproducts"].GetListValue()
		if list == nil {
			list = &structpb.ListValue{}
			runDetails.Fields["byproducts"] = structpb.NewListValue(list)
		}
		list.Values = append(list.Values, rd)
		return nil
	},
	remove: func(doc map[string]any) map[string]any {
		root, rd := copyPath(doc, "predicate", "runDetails")
		removeNamed(rd, "byproducts", func(m map[string]any) bool { return m["name"] == ResponseQuoteProduct })
		return root
	},
}

// removeNamed drops the elements of parent[key] (a list) that match, and
// the key itself if nothing is left. The list is replaced, not modified.
func removeNamed(parent map[string]any, key string, match func(map[string]any) bool) {
	items, ok := parent[key].([]any)
	if !ok {
		return
	}
	kept := items[:0:0]
	for _, item := range items {
		if m, ok := item.(map[string]any); ok && match(m) {
			continue
		}
		kept = append(kept, item)
	}
	if len(kept) == 0 {
		delete(parent, key)
	} else {
		parent[key] = kept
	}
}

// attachQuote marshals st, has the hardware quote its digest, adds the quote
// in its slot and returns the final payload.
func attachQuote(st *intoto.Statement, q Quoter, challenge func([]byte) attest.Challenge, slot quoteSlot) ([]byte, error) {
	body, err := protojson.Marshal(st)
	if err != nil {
		return nil, err
	}
	doc, err := decodeJSON(body)
	if err != nil {
		return nil, err
	}
	digest, err := statementDigest(doc, slot.remove)
	if err != nil {
		return nil, err
	}
	ev, err := q.Collect(challenge(digest))
	if err != nil {
		return nil, fmt.Errorf("response-time quote: %w", err)
	}
	evJSON, err := ev.Encode()
	if err != nil {
		return nil, err
	}
	rd, err := resourceValue(&intoto.ResourceDescriptor{Name: slot.name, MediaType: EvidenceMediaType, Content: evJSON})
	if err != nil {
		return nil, err
	}
	if err := slot.attach(st, rd); err != nil {
		return nil, err
	}
	return protojson.Marshal(st)
}

func resourceValue(rd *intoto.ResourceDescriptor) (*structpb.Value, error) {
	s, err := toStruct(rd)
	if err != nil {
		return nil, err
	}
	return structpb.NewStructValue(s), nil
}

// toStruct converts a protobuf message to the generic Struct an in-toto
// predicate (or annotation) holds, through its JSON form.
func toStruct(m proto.Message) (*structpb.Struct, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	return jsonToStruct(b)
}

func jsonToStruct(b []byte) (*structpb.Struct, error) {
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(b, s); err != nil {
		return nil, err
	}
	return s, nil
}

// signPayload signs an in-toto payload as DSSE into a sigstore bundle.
func signPayload(ctx context.Context, payload []byte, key crypto.Signer) ([]byte, error) {
	kp, err := NewKeypair(key)
	if err != nil {
		return nil, err
	}
	pb, err := sign.Bundle(&sign.DSSEData{Data: payload, PayloadType: InTotoPayloadType}, kp, sign.BundleOptions{Context: ctx})
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return bundleJSON(pb)
}

// bundleJSON is a bundle's one compact JSON form.
func bundleJSON(pb *protobundle.Bundle) ([]byte, error) {
	b, err := protojson.Marshal(pb)
	if err != nil {
		return nil, err
	}
	// protojson's output varies its whitespace on purpose; a bundle is
	// embedded in other JSON (which compacts it) and digested, so every
	// bundle leaves here in its one compact form.
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
