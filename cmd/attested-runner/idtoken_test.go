package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRequestIDToken(t *testing.T) {
	const reqToken, jobToken = "request-secret-123", "eyJh.eyJi.c2ln"
	var answer func(w http.ResponseWriter)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+reqToken || r.URL.Query().Get("audience") != "sigstore" || r.URL.Query().Get("api-version") != "2.0" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		answer(w)
	}))
	defer srv.Close()
	reqURL := srv.URL + "/_apis/pipelines/workflows/1/idtoken?api-version=2.0"

	answer = func(w http.ResponseWriter) { w.Write([]byte(`{"count":1,"value":"` + jobToken + `"}`)) }
	tok, err := requestIDToken(context.Background(), reqURL, reqToken)
	if err != nil || tok != jobToken {
		t.Fatalf("got %q, %v", tok, err)
	}
	if _, err := requestIDToken(context.Background(), "", ""); !errors.Is(err, errNoIDToken) {
		t.Fatalf("no grant: %v", err)
	}
	for name, c := range map[string]struct {
		url, token string
		answer     func(w http.ResponseWriter)
	}{
		"wrong request token": {reqURL, "other", answer},
		"server error":        {reqURL, reqToken, func(w http.ResponseWriter) { http.Error(w, jobToken, 500) }},
		"no value":            {reqURL, reqToken, func(w http.ResponseWriter) { w.Write([]byte(`{"count":0}`)) }},
		"not JSON":            {reqURL, reqToken, func(w http.ResponseWriter) { w.Write([]byte(jobToken)) }},
		"oversized answer":    {reqURL, reqToken, func(w http.ResponseWriter) { w.Write([]byte(strings.Repeat(" ", maxIDTokenResponse+1))) }},
		"oversized token":     {reqURL, reqToken, func(w http.ResponseWriter) { w.Write([]byte(`{"value":"` + strings.Repeat("a", 20<<10) + `"}`)) }},
		"not a URL":           {"file:///etc/passwd", reqToken, answer},
	} {
		t.Run(name, func(t *testing.T) {
			answer = c.answer
			tok, err := requestIDToken(context.Background(), c.url, c.token)
			if err == nil || tok != "" {
				t.Fatalf("got %q, %v", tok, err)
			}
			if errors.Is(err, errNoIDToken) {
				t.Fatalf("a failed request reads as no grant: %v", err)
			}
			if strings.Contains(err.Error(), reqToken) || strings.Contains(err.Error(), jobToken) {
				t.Fatalf("error carries a token: %v", err)
			}
		})
	}
}

func FuzzIDTokenAnswer(f *testing.F) {
	f.Add([]byte(`{"count":1,"value":"eyJh.eyJi.c2ln"}`))
	f.Add([]byte(`{"value":""}`))
	f.Add([]byte(`{"value":1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := parseIDTokenAnswer(b)
		if err == nil && (tok == "" || len(tok) > 16<<10) {
			t.Fatalf("accepted token of %d bytes", len(tok))
		}
		if err != nil && tok != "" {
			t.Fatal("token returned with an error")
		}
		if err != nil && len(b) > 8 && strings.Contains(err.Error(), string(b)) {
			t.Fatal("error quotes the answer")
		}
	})
}
