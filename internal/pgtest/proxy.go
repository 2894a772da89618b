package pgtest

import (
	"fmt"
	"net"
	"strings"
	"sync"
)

// Proxy is the network between a client and the cluster: a loopback TCP
// listener forwarding to the server's unix socket, which a test can cut.
type Proxy struct {
	ln     net.Listener
	target string

	mu       sync.Mutex
	cond     *sync.Cond
	paused   bool
	closed   bool
	conns    map[net.Conn]struct{}
	accepted int
}

// Proxy starts a proxy to the cluster's socket.
func (c *Cluster) Proxy() (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: c.SocketPath(), conns: map[net.Conn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	go p.serve()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// DSN rewrites a DSN from this package to go through the proxy.
func (p *Proxy) DSN(dsn string) string {
	host, port, _ := net.SplitHostPort(p.Addr())
	var out []string
	for _, f := range strings.Fields(dsn) {
		if !strings.HasPrefix(f, "host=") && !strings.HasPrefix(f, "port=") {
			out = append(out, f)
		}
	}
	return fmt.Sprintf("host=%s port=%s %s", host, port, strings.Join(out, " "))
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("unix", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.accepted++
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// pipe copies src to dst, holding every chunk while the proxy is paused.
func (p *Proxy) pipe(src, dst net.Conn) {
	defer func() {
		src.Close()
		dst.Close()
		p.mu.Lock()
		delete(p.conns, src)
		delete(p.conns, dst)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.paused && !p.closed {
				p.cond.Wait()
			}
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Blackhole stops every byte in both directions, on open connections and
// new ones, without closing anything: a network partition, where only
// timeouts tell a client that its peer is gone.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

// Restore lets bytes through again (held ones first).
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.paused = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Cut resets every open connection (new ones are accepted).
func (p *Proxy) Cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST, not FIN
			n++
		}
		c.Close()
	}
	return n
}

// Accepted is how many connections the proxy has accepted.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Close stops the proxy and drops every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	return p.ln.Close()
}
