// Command stdiorelay joins its standard input and output to one TCP
// connection: `stdiorelay HOST:PORT`. scripts/image/boot.sh --forward runs
// it as a QEMU user-network "guestfwd=...-cmd:" program, which QEMU spawns
// once per guest connection with the connection on stdin and stdout (the
// same role as `socat STDIO TCP:HOST:PORT`, when socat is not installed).
//
// A guestfwd to a character device instead ("-tcp:HOST:PORT") would carry
// every guest connection over one host connection opened at QEMU start,
// which breaks HTTP clients that open several connections.
//
// It writes nothing but relayed bytes (stderr may be the guest connection
// too) and exits with status 1 when it cannot connect.
package main

import (
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) != 2 {
		os.Exit(2)
	}
	c, err := net.DialTimeout("tcp", os.Args[1], 10*time.Second)
	if err != nil {
		os.Exit(1)
	}
	conn := c.(*net.TCPConn)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		io.Copy(conn, os.Stdin)
		conn.CloseWrite()
	}()
	go func() {
		defer wg.Done()
		io.Copy(os.Stdout, conn)
		// Half-close toward the guest: the server is done sending.
		unix.Shutdown(int(os.Stdout.Fd()), unix.SHUT_WR)
	}()
	wg.Wait()
	conn.Close()
}
