package ghattest

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzList: GitHub's answer is outside bytes. Whatever a page holds, List
// returns an error or between 1 and MaxAttestations attestations, and
// never follows a link off the API.
func FuzzList(f *testing.F) {
	f.Add([]byte(`{"attestations":[{"bundle":{"mediaType":"x"},"repository_id":1}]}`), "")
	f.Add([]byte(`{"attestations":[]}`), `<http://evil.example/x>; rel="next"`)
	f.Add([]byte(`{"attestations":null}`), "")
	f.Add([]byte(`[`), "")
	f.Fuzz(func(t *testing.T, body []byte, link string) {
		var srv *httptest.Server
		srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("page") == "2" {
				w.Write([]byte(`{"attestations":[]}`))
				return
			}
			if strings.ContainsAny(link, "\r\n") {
				link = ""
			}
			w.Header().Set("Link", strings.ReplaceAll(link, "SELF", srv.URL))
			w.Write(body)
		}))
		defer srv.Close()
		got, err := (&Client{API: srv.URL, HTTP: srv.Client()}).List(context.Background(), "repos/a/b", strings.Repeat("0", 64))
		if err != nil {
			return
		}
		if len(got) == 0 || len(got) > MaxAttestations {
			t.Fatalf("%d attestations", len(got))
		}
	})
}

// TestUploadRefusals: Upload refuses what it must not send, before any
// request.
func TestUploadRefusals(t *testing.T) {
	c := &Client{API: "http://127.0.0.1:1"}
	for _, tc := range []struct {
		repo   string
		bundle []byte
		want   error
	}{
		{"a/b", make([]byte, MaxUpload+1), ErrTooLarge},
		{"a/b", []byte("not json"), nil},
		{"a", []byte("{}"), nil},
	} {
		if _, err := c.Upload(context.Background(), tc.repo, tc.bundle); err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || strings.Contains(err.Error(), "connect") {
			t.Errorf("%q %.10q: %v", tc.repo, tc.bundle, err)
		}
	}
}

func TestAPIFor(t *testing.T) {
	for in, want := range map[string]string{
		"github.com": "https://api.github.com", "https://github.com/": "https://api.github.com",
		"ghe.example.com": "https://ghe.example.com/api/v3", "http://127.0.0.1:8080": "http://127.0.0.1:8080/api/v3",
	} {
		if got := APIFor(in); got != want {
			t.Errorf("APIFor(%q) = %q, want %q", in, got, want)
		}
	}
}
