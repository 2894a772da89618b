package runner

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The agent's local socket: the job-started/-completed hooks and the
// job-side attest action talk to the agent over it. Only the runner user
// may use it (SO_PEERCRED); it offers no other operation.
//
// Everything the runner user sends is attacker-controlled once the job's
// first step has run, so the protocol is made for a hostile peer: the agent
// never receives a path to act on. The attest client opens the files itself,
// as the job user, and hands the agent their descriptors (SCM_RIGHTS); the
// agent hashes exactly what it was handed and returns the signed bundle as
// bytes, which the client writes, again as the job user.
//
// Wire format, one request per connection, both directions:
//
//	4-byte big-endian length n, then n bytes of JSON
//
// A request is {"op": OP, "body": {...}}; the attest request's file
// descriptors ride as one SCM_RIGHTS control message on its first bytes,
// in the order of its subjects. A response is {"body": {...}} or
// {"error": "..."}.
const (
	OpJobStarted   = "job-started"
	OpJobCompleted = "job-completed"
	OpAttest       = "attest"
)

// Limits of the socket protocol.
const (
	// MaxSubjects bounds one attest request: the descriptors travel in one
	// control message, which the kernel caps at 253 (SCM_MAX_FD).
	MaxSubjects = 250
	// maxRequest bounds a request frame (a hook report with its event
	// payload is the largest).
	maxRequest = maxHookReport + 64<<10
	// maxResponse bounds a response frame (a bundle with its evidence).
	maxResponse = 16 << 20
	// maxConns bounds concurrent connections: a job cannot exhaust the
	// agent's descriptors or memory by opening many.
	maxConns = 8
	// requestReadTimeout bounds how long a peer may take to send its request.
	requestReadTimeout = 10 * time.Second
	// responseWriteTimeout bounds how long a peer may take to read the answer.
	responseWriteTimeout = 30 * time.Second
)

// Socket errors.
var (
	ErrSocketForbidden = errors.New("may not use the agent socket")
	ErrSocketProtocol  = errors.New("agent socket protocol violation")
	ErrSocketBusy      = errors.New("the agent socket is busy")
)

// AttestRequest asks the agent to attest files of the running job. The
// files are not named by path: their open descriptors travel with the
// request, one per subject, in order.
type AttestRequest struct {
	// Subjects are the names to record for the files, in descriptor order:
	// workspace-relative paths, as the client resolved them.
	Subjects []string `json:"subjects"`
	// IDToken, when the workflow granted id-token: write, is the job's
	// GitHub OIDC token (audience sigstore): the agent then has Fulcio
	// certify the environment key for the job's workflow and records the
	// signature in Rekor (a keyless bundle). It is a credential: the agent
	// sends it to the gate policy's Fulcio and nowhere else, never logs it
	// and never writes it down.
	IDToken string `json:"idToken,omitempty"`
}

// AttestResponse carries the signed bundle and what it attests.
type AttestResponse struct {
	// Bundle is the sigstore bundle (JSON); the client writes it.
	Bundle   []byte          `json:"bundle"`
	Subjects []AttestSubject `json:"subjects"`
	// Keyless reports a bundle with a Fulcio certificate and a Rekor
	// entry; false is a bundle signed by the bare environment key.
	Keyless bool `json:"keyless"`
	// Notice, if set, tells the job why it got a key-signed bundle
	// although it sent a token.
	Notice string `json:"notice,omitempty"`
}

// AttestSubject is one attested file.
type AttestSubject struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// JobStartedResponse tells the hook what the agent recorded.
type JobStartedResponse struct {
	BuildID string `json:"buildId"`
	// Dispatch is the path of the signed dispatch attestation.
	Dispatch string `json:"dispatch"`
}

type socketRequest struct {
	Op   string          `json:"op"`
	Body json.RawMessage `json:"body"`
}

type socketResponse struct {
	Body  json.RawMessage `json:"body,omitempty"`
	Error string          `json:"error,omitempty"`
}

// socketHandler serves one decoded request. files are the descriptors that
// came with it (only attest takes any); the server closes them afterwards.
type socketHandler func(ctx context.Context, op string, body []byte, files []int) (any, error)

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
func listenSocket(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// socketServer serves the agent socket.
type socketServer struct {
	ln         *net.UnixListener
	allowedUID int
	handle     socketHandler
	log        *slog.Logger
	sem        chan struct{}
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// serveSocket serves h on ln, refusing any peer whose uid is not allowed.
// Close stops it and waits for requests in flight.
func serveSocket(ctx context.Context, ln *net.UnixListener, allowedUID int, h socketHandler, log *slog.Logger) *socketServer {
	s := &socketServer{ln: ln, allowedUID: allowedUID, handle: h, log: log, sem: make(chan struct{}, maxConns)}
	s.ctx, s.cancel = context.WithCancel(ctx)
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

// Close stops accepting, cancels requests in flight and waits for them.
func (s *socketServer) Close() error {
	s.cancel()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *socketServer) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("agent socket accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		select {
		case s.sem <- struct{}{}:
		default:
			writeResponse(c, nil, fmt.Errorf("%w: %d requests in flight", ErrSocketBusy, maxConns))
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sem }()
			s.serveConn(c)
		}()
	}
}

func (s *socketServer) serveConn(c *net.UnixConn) {
	defer c.Close()
	uid, err := peerUID(c)
	if err != nil {
		uid = -1
	}
	if uid != s.allowedUID {
		// Nothing is read: descriptors the peer sent die with the socket.
		s.log.Warn("socket request refused", "peer_uid", uid, "want_uid", s.allowedUID)
		writeResponse(c, nil, fmt.Errorf("uid %d %w (only the runner user, uid %d)", uid, ErrSocketForbidden, s.allowedUID))
		return
	}
	c.SetReadDeadline(time.Now().Add(requestReadTimeout))
	frame, files, err := readFrame(c, maxRequest, MaxSubjects)
	var resp any
	if err != nil {
		s.log.Warn("socket request refused", "err", err)
	} else {
		resp, err = s.serveFrame(frame, files)
	}
	// The job's descriptors are closed before the answer goes out: once
	// the client has its answer, the agent holds none of them.
	closeFDs(files)
	writeResponse(c, resp, err)
}

func (s *socketServer) serveFrame(frame []byte, files []int) (any, error) {
	req, err := decodeRequest(frame)
	if err == nil && req.Op != OpAttest && len(files) > 0 {
		err = fmt.Errorf("%w: %s takes no file descriptors", ErrSocketProtocol, req.Op)
	}
	if err != nil {
		s.log.Warn("socket request refused", "err", err)
		return nil, err
	}
	// The handler logs its own refusals, with their context.
	return s.handle(s.ctx, req.Op, req.Body, files)
}

func decodeRequest(frame []byte) (*socketRequest, error) {
	var req socketRequest
	if err := decodeStrict(frame, &req); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSocketProtocol, err)
	}
	switch req.Op {
	case OpJobStarted, OpJobCompleted, OpAttest:
	default:
		return nil, fmt.Errorf("%w: unknown operation %q", ErrSocketProtocol, req.Op)
	}
	return &req, nil
}

// readFrame reads one length-prefixed frame, collecting the descriptors
// that ride on its first bytes. Descriptors anywhere else, more than
// maxFDs, or a truncated control message are a protocol violation (and
// every descriptor received is closed).
func readFrame(c *net.UnixConn, limit, maxFDs int) (frame []byte, fds []int, err error) {
	defer func() {
		if err != nil {
			closeFDs(fds)
			fds = nil
		}
	}()
	oob := make([]byte, unix.CmsgSpace(4*(maxFDs+1)))
	var hdr [4]byte
	for got := 0; got < len(hdr); {
		n, oobn, flags, _, err := c.ReadMsgUnix(hdr[got:], oob)
		rights, perr := parseRights(oob[:oobn])
		fds = append(fds, rights...)
		switch {
		case perr != nil:
			return nil, fds, perr
		case flags&unix.MSG_CTRUNC != 0:
			return nil, fds, fmt.Errorf("%w: control message truncated (more than %d descriptors?)", ErrSocketProtocol, maxFDs)
		case len(rights) > 0 && got > 0:
			return nil, fds, fmt.Errorf("%w: descriptors after the first bytes of the request", ErrSocketProtocol)
		case len(fds) > maxFDs:
			return nil, fds, fmt.Errorf("%w: %d descriptors, at most %d", ErrSocketProtocol, len(fds), maxFDs)
		case err != nil:
			return nil, fds, fmt.Errorf("%w: reading the request: %v", ErrSocketProtocol, err)
		}
		got += n
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if size > uint32(limit) {
		return nil, fds, fmt.Errorf("%w: request of %d bytes, limit %d", ErrSocketProtocol, size, limit)
	}
	frame = make([]byte, size)
	for got := 0; got < len(frame); {
		n, oobn, _, _, err := c.ReadMsgUnix(frame[got:], oob)
		rights, perr := parseRights(oob[:oobn])
		fds = append(fds, rights...)
		if perr != nil || len(rights) > 0 {
			return nil, fds, fmt.Errorf("%w: descriptors after the first bytes of the request", ErrSocketProtocol)
		}
		if err != nil {
			return nil, fds, fmt.Errorf("%w: reading the request: %v", ErrSocketProtocol, err)
		}
		got += n
	}
	return frame, fds, nil
}

func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("%w: control message: %v", ErrSocketProtocol, err)
	}
	var fds []int
	var bad error
	for _, m := range msgs {
		r, err := unix.ParseUnixRights(&m)
		if err != nil {
			bad = fmt.Errorf("%w: control message of type %d", ErrSocketProtocol, m.Header.Type)
			continue
		}
		fds = append(fds, r...)
	}
	return fds, bad
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

func writeFrame(w io.Writer, b []byte) error {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

func writeResponse(c net.Conn, body any, herr error) {
	var resp socketResponse
	if herr != nil {
		resp.Error = herr.Error()
	} else {
		b, err := json.Marshal(body)
		if err != nil {
			resp.Error = err.Error()
		} else {
			resp.Body = b
		}
	}
	b, err := json.Marshal(resp)
	if err != nil {
		return
	}
	c.SetWriteDeadline(time.Now().Add(responseWriteTimeout))
	writeFrame(c, b)
}

// Client is the hook / job-action side of the socket. It runs as the job
// user.
type Client struct {
	Socket string
}

// Call sends one request and decodes the answer into resp. files are open
// files whose descriptors travel with the request (attest only).
func (c *Client) Call(ctx context.Context, op string, req, resp any, files ...*os.File) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	frame, err := json.Marshal(socketRequest{Op: op, Body: body})
	if err != nil {
		return err
	}
	if len(frame) > maxRequest {
		return fmt.Errorf("request of %d bytes is over the agent's limit of %d", len(frame), maxRequest)
	}
	if len(files) > MaxSubjects {
		return fmt.Errorf("%d files, the agent takes at most %d per request", len(files), MaxSubjects)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		return fmt.Errorf("agent socket %s: %w (is this job running on an attested runner?)", c.Socket, err)
	}
	conn := nc.(*net.UnixConn)
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	msg := make([]byte, 4, 4+len(frame))
	binary.BigEndian.PutUint32(msg, uint32(len(frame)))
	msg = append(msg, frame...)
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	n, _, werr := conn.WriteMsgUnix(msg, oob, nil)
	if werr == nil && n < len(msg) {
		_, werr = conn.Write(msg[n:])
	}
	// The agent may refuse before reading everything (another uid): its
	// answer says why, so it is read even when sending failed.
	answer, _, err := readFrame(conn, maxResponse, 0)
	if err != nil && werr != nil {
		return fmt.Errorf("agent socket: sending the request: %w", werr)
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("agent socket: %w", ctx.Err())
		}
		return fmt.Errorf("agent socket: reading the answer: %w", err)
	}
	var r socketResponse
	if err := json.Unmarshal(answer, &r); err != nil {
		return fmt.Errorf("agent socket: answer: %w", err)
	}
	if r.Error != "" {
		return errors.New(r.Error)
	}
	if resp == nil {
		return nil
	}
	return json.Unmarshal(r.Body, resp)
}
