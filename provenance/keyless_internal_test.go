package provenance

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestSigstoreResponsesLimited(t *testing.T) {
	for _, tc := range []struct {
		size int
		want error
	}{
		{maxSigstoreResponse, nil},
		{maxSigstoreResponse + 1, ErrTooLarge},
		{8 * maxSigstoreResponse, ErrTooLarge},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write(bytes.Repeat([]byte("x"), tc.size))
		}))
		c := &http.Client{Transport: (&Keyless{}).transport()}
		resp, err := c.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		if !errors.Is(err, tc.want) {
			t.Errorf("%d bytes: got %v, want %v", tc.size, err, tc.want)
		}
		if tc.want == nil && len(b) != tc.size {
			t.Errorf("%d bytes read of %d", len(b), tc.size)
		}
	}
}
