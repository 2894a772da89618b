package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// The agent's local socket: the job-started/-completed hooks and the
// job-side attest action talk to the agent over it. Only the runner user
// may use it (SO_PEERCRED); it offers no other operation.
const (
	SocketPathJobStarted   = "/v1/job/started"
	SocketPathJobCompleted = "/v1/job/completed"
	SocketPathAttest       = "/v1/attest"
)

// AttestRequest asks the agent to attest files of the running job.
type AttestRequest struct {
	// Subjects are paths relative to the job workspace (or absolute paths
	// inside it). Globs are expanded by the client.
	Subjects []string `json:"subjects"`
	// Bundle is where to write the bundle, relative to the workspace (or
	// absolute inside it). Default: <first subject>.sigstore.json.
	Bundle string `json:"bundle,omitempty"`
}

// AttestResponse lists what was attested.
type AttestResponse struct {
	Bundle   string          `json:"bundle"`
	Subjects []AttestSubject `json:"subjects"`
}

// AttestSubject is one attested file.
type AttestSubject struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// JobStartedResponse tells the hook what the agent recorded.
type JobStartedResponse struct {
	BuildID string `json:"buildId"`
	// Dispatch is the path of the signed dispatch attestation.
	Dispatch string `json:"dispatch"`
}

type peerKey struct{}

// peerUID returns the uid of the process on the other end of a unix socket.
func peerUID(c net.Conn) (int, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if serr != nil {
		return -1, serr
	}
	return int(cred.Uid), nil
}

// listenSocket creates the socket: the directory is root's and
// world-searchable, the socket world-connectable; authorization is the
// peer-credential check on every connection, which file modes cannot fake.
func listenSocket(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// serveSocket serves h on ln, refusing any peer whose uid is not allowed.
func serveSocket(ctx context.Context, ln net.Listener, allowedUID int, h http.Handler, log func(string, ...any)) *http.Server {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			uid, _ := r.Context().Value(peerKey{}).(int)
			if uid != allowedUID {
				log("socket request refused", "path", r.URL.Path, "peer_uid", uid, "want_uid", allowedUID)
				writeSocketError(w, http.StatusForbidden, fmt.Errorf("uid %d may not use the agent socket (only the runner user, uid %d)", uid, allowedUID))
				return
			}
			h.ServeHTTP(w, r)
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			uid, err := peerUID(c)
			if err != nil {
				uid = -1
			}
			return context.WithValue(ctx, peerKey{}, uid)
		},
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go srv.Serve(ln)
	return srv
}

func writeSocketError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

func readSocketJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// Client is the hook / job-action side of the socket.
type Client struct {
	Socket string
}

// Call posts req to path and decodes the answer into resp.
func (c *Client) Call(ctx context.Context, path string, req, resp any) error {
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", c.Socket)
		},
	}}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", "application/json")
	res, err := hc.Do(hr)
	if err != nil {
		return fmt.Errorf("agent socket %s: %w (is this job running on an attested runner?)", c.Socket, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("agent answered %s", res.Status)
	}
	if resp == nil {
		return nil
	}
	return json.Unmarshal(b, resp)
}
