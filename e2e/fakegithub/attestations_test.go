package fakegithub

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/internal/ghattest"
	"github.com/golang/snappy"
)

// testBundle is a bundle-shaped document whose in-toto statement has the
// given subjects (content strings; their SHA-256 are the digests).
func testBundle(t *testing.T, contents ...string) ([]byte, []string) {
	t.Helper()
	var subs []map[string]any
	var digests []string
	for i, c := range contents {
		d := sha256.Sum256([]byte(c))
		subs = append(subs, map[string]any{"name": fmt.Sprintf("f%d", i), "digest": map[string]string{"sha256": hex.EncodeToString(d[:])}})
		digests = append(digests, hex.EncodeToString(d[:]))
	}
	st, _ := json.Marshal(map[string]any{"_type": "https://in-toto.io/Statement/v1", "subject": subs, "predicateType": "x", "predicate": map[string]any{}})
	b, _ := json.Marshal(map[string]any{
		"mediaType":    "application/vnd.dev.sigstore.bundle.v0.3+json",
		"dsseEnvelope": map[string]any{"payload": base64.StdEncoding.EncodeToString(st), "payloadType": "application/vnd.in-toto+json", "signatures": []any{}},
	})
	return b, digests
}

// TestAttestationStore: the upload and the by-digest reads round-trip,
// under the repository and the organization, page by page; each refusal
// is GitHub's status.
func TestAttestationStore(t *testing.T) {
	f := startFake(t, nil)
	ctx := context.Background()
	api := f.srv.URL() + "/api/v3"
	writer := &ghattest.Client{API: api, Token: f.srv.JobToken("acme/widgets", true)}
	reader := &ghattest.Client{API: api, Token: f.srv.JobToken("acme/gadgets", false)}
	b1, d1 := testBundle(t, "one", "two")
	b2, _ := testBundle(t, "one")
	id1, err := writer.Upload(ctx, "acme/widgets", b1)
	if err != nil || id1 == 0 {
		t.Fatalf("upload: %d, %v", id1, err)
	}
	if _, err := writer.Upload(ctx, "acme/widgets", b2); err != nil {
		t.Fatal(err)
	}
	for _, scope := range []string{"repos/acme/widgets", "repos/ACME/Widgets", "orgs/acme"} {
		got, err := reader.List(ctx, scope, d1[0])
		if err != nil || len(got) != 2 || string(got[0].Bundle) != string(b1) || string(got[1].Bundle) != string(b2) || got[0].RepositoryID == 0 {
			t.Fatalf("%s: %d attestations, %v", scope, len(got), err)
		}
		if got, err := reader.List(ctx, scope, d1[1]); err != nil || len(got) != 1 {
			t.Fatalf("%s, second subject: %d, %v", scope, len(got), err)
		}
	}
	// Another repository of the owner has none; nor has an unknown digest.
	if _, err := reader.List(ctx, "repos/acme/gadgets", d1[0]); !errors.Is(err, ghattest.ErrNotFound) {
		t.Errorf("other repo: %v", err)
	}
	if _, err := reader.List(ctx, "orgs/acme", strings.Repeat("0", 64)); !errors.Is(err, ghattest.ErrNotFound) {
		t.Errorf("unknown digest: %v", err)
	}

	// Paging: per_page 1 follows rel="next" to the end.
	res, err := http.Get(api + "/repos/acme/widgets/attestations/sha256:" + d1[0] + "?per_page=1")
	if err != nil || res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("read without a token: %v %v", res.Status, err)
	}
	req, _ := http.NewRequest("GET", api+"/repos/acme/widgets/attestations/sha256:"+d1[0]+"?per_page=1", nil)
	req.Header.Set("Authorization", "Bearer "+reader.Token)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if link := res.Header.Get("Link"); !strings.Contains(link, `rel="next"`) || !strings.HasPrefix(link, "<"+api+"/repos/acme/widgets/attestations/") {
		t.Errorf("Link %q", link)
	}

	for _, tc := range []struct {
		name   string
		client *ghattest.Client
		repo   string
		bundle []byte
		want   error
		status string
	}{
		{"read-only token", reader, "acme/gadgets", b1, ghattest.ErrForbidden, "403"},
		{"token of another repository", writer, "acme/gadgets", b1, ghattest.ErrForbidden, "403"},
		{"no token", &ghattest.Client{API: api}, "acme/widgets", b1, ghattest.ErrForbidden, "401"},
		{"unknown token", &ghattest.Client{API: api, Token: "ghs_nope"}, "acme/widgets", b1, ghattest.ErrForbidden, "401"},
		{"not a bundle", writer, "acme/widgets", []byte(`{"mediaType":"text/plain"}`), nil, "422"},
		{"no sha256 subject", writer, "acme/widgets", mustNoSubject(t), nil, "422"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.client.Upload(ctx, tc.repo, tc.bundle)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.status) {
				t.Fatalf("got %v, want %v (%s)", err, tc.want, tc.status)
			}
		})
	}
	// A reader of another owner sees nothing.
	other := &ghattest.Client{API: api, Token: f.srv.JobToken("evil/app", false)}
	if _, err := other.List(ctx, "orgs/acme", d1[0]); !errors.Is(err, ghattest.ErrNotFound) {
		t.Errorf("other owner: %v", err)
	}
	if n := len(f.srv.Attestations("acme/widgets")); n != 2 {
		t.Errorf("%d attestations stored, want 2", n)
	}
}

func mustNoSubject(t *testing.T) []byte {
	t.Helper()
	st, _ := json.Marshal(map[string]any{"subject": []any{map[string]any{"digest": map[string]string{"sha512": "00"}}}})
	b, _ := json.Marshal(map[string]any{
		"mediaType":    "application/vnd.dev.sigstore.bundle.v0.3+json",
		"dsseEnvelope": map[string]any{"payload": base64.StdEncoding.EncodeToString(st), "payloadType": "application/vnd.in-toto+json"},
	})
	return b
}

// TestAttestationListBounds: the reader stops at ghattest.MaxAttestations
// and never follows a next link to another host.
func TestAttestationListBounds(t *testing.T) {
	f := startFake(t, nil)
	ctx := context.Background()
	b, d := testBundle(t, "many")
	for range ghattest.MaxAttestations + 1 {
		f.srv.PutAttestation("acme/widgets", b, "sha256:"+d[0])
	}
	reader := &ghattest.Client{API: f.srv.URL() + "/api/v3", Token: f.srv.JobToken("acme/widgets", false)}
	if _, err := reader.List(ctx, "repos/acme/widgets", d[0]); !errors.Is(err, ghattest.ErrTooLarge) {
		t.Fatalf("%d+1 attestations: %v", ghattest.MaxAttestations, err)
	}

	// A Link to another host: the page read is kept, the link is not
	// followed (the token would go there).
	evil := http.NewServeMux()
	evil.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", `<http://evil.example/steal?x=1>; rel="next"`)
		fmt.Fprintf(w, `{"attestations":[{"bundle":%s}]}`, b)
	})
	srv := httptestServer(t, evil)
	got, err := (&ghattest.Client{API: srv, Token: "t"}).List(ctx, "repos/a/b", d[0])
	if err != nil || len(got) != 1 {
		t.Fatalf("%d, %v", len(got), err)
	}
}

func httptestServer(t *testing.T, h http.Handler) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}

// TestAttestationBundleURLAndFilter: what gh attestation verify relies on:
// each listed attestation says initiator "user" and has a bundle_url that
// serves the bundle snappy-compressed, and predicate_type filters the list.
func TestAttestationBundleURLAndFilter(t *testing.T) {
	f := startFake(t, nil)
	ctx := context.Background()
	api := f.srv.URL() + "/api/v3"
	writer := &ghattest.Client{API: api, Token: f.srv.JobToken("acme/widgets", true)}
	b, d := testBundle(t, "one")
	if _, err := writer.Upload(ctx, "acme/widgets", b); err != nil {
		t.Fatal(err)
	}
	list := func(query string) []map[string]any {
		t.Helper()
		req, _ := http.NewRequest("GET", api+"/orgs/acme/attestations/sha256:"+d[0]+query, nil)
		req.Header.Set("Authorization", "Bearer "+writer.Token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out struct {
			Attestations []map[string]any `json:"attestations"`
		}
		if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("list%s: %s %v", query, res.Status, err)
		}
		return out.Attestations
	}
	all := list("")
	if len(all) != 1 || all[0]["initiator"] != "user" {
		t.Fatalf("list: %+v", all)
	}
	if got := list("?predicate_type=x"); len(got) != 1 {
		t.Errorf("predicate_type of the statement: %d attestations", len(got))
	}
	if got := list("?predicate_type=https://slsa.dev/provenance/v1"); len(got) != 0 {
		t.Errorf("another predicate_type: %d attestations", len(got))
	}
	res, err := http.Get(all[0]["bundle_url"].(string))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	got, err := snappy.Decode(nil, body)
	if res.StatusCode != http.StatusOK || err != nil || string(got) != string(b) {
		t.Fatalf("bundle_url: %s, snappy %v, %d bytes", res.Status, err, len(got))
	}
	if res, err := http.Get(f.srv.URL() + "/_fake/attestations/99/bundle"); err != nil || res.StatusCode != http.StatusNotFound {
		t.Errorf("unknown bundle_url: %v %v", res.Status, err)
	}
}
