package harness

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Exchange is one request the proxy forwarded, and the answer.
type Exchange struct {
	Method, Path string
	// Request is the body as forwarded (after any Hook); Original is the
	// body as the client sent it.
	Request, Original []byte
	// Status is the gate's HTTP status; 0 if the gate could not be reached
	// (the client then got 502).
	Status   int
	Response []byte
	// Start is when the request arrived, End when the answer came back.
	Start, End time.Time
}

// Hook sees every request before it is forwarded and returns the body to
// forward (the same slice, or an edited one). It may also act, e.g.
// restart the gate, before the request reaches it.
type Hook func(method, path string, body []byte) []byte

// ResponseHook sees every answer of the gate (with the request as
// forwarded) and returns the answer the client gets.
type ResponseHook func(path string, status int, request, response []byte) []byte

// Proxy is a recording HTTP proxy in front of the gate: the network
// between the agents and the gate, which an attacker may read, replay or
// rewrite. Agents pointed at URL reach the gate through it.
type Proxy struct {
	URL    string
	target string
	srv    *http.Server
	ln     net.Listener
	client *http.Client

	mu        sync.Mutex
	exchanges []Exchange
	hook      Hook
	respHook  ResponseHook
}

// StartProxy listens on a free loopback port and forwards to target.
func StartProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{URL: "http://" + ln.Addr().String(), target: strings.TrimSuffix(target, "/"), ln: ln,
		client: &http.Client{Timeout: 90 * time.Second}}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln)
	return p, nil
}

// SetResponseHook installs (or, with nil, removes) the response hook.
func (p *Proxy) SetResponseHook(h ResponseHook) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.respHook = h
}

// SetHook installs (or, with nil, removes) the request hook.
func (p *Proxy) SetHook(h Hook) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hook = h
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	x := Exchange{Method: r.Method, Path: r.URL.Path, Start: time.Now()}
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	x.Original, x.Request = body, body
	p.mu.Lock()
	hook := p.hook
	p.mu.Unlock()
	if hook != nil {
		x.Request = hook(r.Method, r.URL.Path, body)
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), bytes.NewReader(x.Request))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		x.End = time.Now()
		p.record(x)
		http.Error(w, "proxy: gate unreachable: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	x.Status = resp.StatusCode
	x.Response, _ = io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	p.mu.Lock()
	respHook := p.respHook
	p.mu.Unlock()
	if respHook != nil {
		x.Response = respHook(r.URL.Path, resp.StatusCode, x.Request, x.Response)
	}
	// Recorded before the client sees the answer, so that whoever acts on
	// the answer finds the exchange recorded.
	x.End = time.Now()
	p.record(x)
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(x.Response)
}

func (p *Proxy) record(x Exchange) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.exchanges = append(p.exchanges, x)
}

// Exchanges returns the recorded exchanges for path ("" for all), in the
// order they completed.
func (p *Proxy) Exchanges(path string) []Exchange {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Exchange
	for _, x := range p.exchanges {
		if path == "" || x.Path == path {
			out = append(out, x)
		}
	}
	return out
}

// Close stops the proxy.
func (p *Proxy) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return p.srv.Shutdown(ctx)
}
