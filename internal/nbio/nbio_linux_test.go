package nbio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// pair returns a connected loopback pair, both ends wrapped.
func pair(t *testing.T) (client, server *Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.FailNow()
	}
	client, server = Wrap(c).(*Conn), Wrap(s).(*Conn)
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return client, server
}

func TestWrapLeavesOtherConns(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := Wrap(a); got != a {
		t.Fatalf("Wrap(pipe) = %T, want the pipe itself", got)
	}
}

// raceProbe is written before a Write and read after the peer's Read.
var raceProbe int

// TestRaceOrdering: under -race, bytes sent over a socket order what the
// sender did before sending before what the receiver does after reading,
// as with package net's own calls, whichever end is wrapped.
func TestRaceOrdering(t *testing.T) {
	for _, wrapped := range []string{"reader", "writer"} {
		t.Run(wrapped, func(t *testing.T) {
			c, s := pair(t)
			var w, r net.Conn = c.TCPConn, s // a raw read after Go's write
			if wrapped == "writer" {
				w, r = c, s.TCPConn // Go's read after a raw write
			}
			go func() {
				raceProbe = 1
				_, _ = w.Write([]byte("x"))
			}()
			if _, err := r.Read(make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			if raceProbe != 1 {
				t.Fatal("the write before the socket's did not happen")
			}
			raceProbe = 0
		})
	}
}

// TestLargeTransfer writes more than the socket buffers hold to a slow
// reader, so writes come back short and with EAGAIN and wait for space.
func TestLargeTransfer(t *testing.T) {
	c, s := pair(t)
	want := make([]byte, 8<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	done := make(chan error, 1)
	go func() {
		n, err := c.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		done <- err
	}()
	got := make([]byte, 0, len(want))
	buf := make([]byte, 1000) // small reads: the writer fills the buffers
	for len(got) < len(want) {
		n, err := s.Read(buf)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", len(got), err)
		}
		got = append(got, buf[:n]...)
		if len(got)%(1<<20) < n {
			time.Sleep(time.Millisecond)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("bytes differ")
	}
}

func TestEOF(t *testing.T) {
	c, s := pair(t)
	if _, err := c.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "bye" {
		t.Fatalf("ReadAll = %q, %v; want \"bye\", nil", got, err)
	}
	if n, err := s.Read(make([]byte, 4)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("Read after EOF = %d, %v; want 0, io.EOF", n, err)
	}
}

func TestZeroLength(t *testing.T) {
	c, s := pair(t)
	if n, err := c.Write(nil); n != 0 || err != nil {
		t.Fatalf("Write(nil) = %d, %v", n, err)
	}
	if n, err := s.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", n, err)
	}
}

func TestReadDeadline(t *testing.T) {
	_, s := pair(t)
	_ = s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := s.Read(make([]byte, 10))
	checkOpErr(t, err, "read")
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v, want a net.Error that times out", err)
	}
	// A later deadline lets the connection be used again.
	_ = s.SetReadDeadline(time.Time{})
}

func TestWriteDeadline(t *testing.T) {
	c, _ := pair(t) // nobody reads: the buffers fill
	big := make([]byte, 64<<20)
	_ = c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := c.Write(big)
	checkOpErr(t, err, "write")
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	if n <= 0 || n >= len(big) {
		t.Fatalf("n = %d, want what the buffers took", n)
	}
}

func TestCloseWhileReading(t *testing.T) {
	_, s := pair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	_ = s.Close()
	select {
	case err := <-errc:
		checkOpErr(t, err, "read")
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("err = %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read did not return after Close")
	}
}

// TestReset: a peer that aborts the connection gives ECONNRESET on read
// and an error, not a SIGPIPE, on write.
func TestReset(t *testing.T) {
	c, s := pair(t)
	_ = c.SetLinger(0)
	_ = c.Close()
	time.Sleep(10 * time.Millisecond)
	_, err := s.Read(make([]byte, 10))
	checkOpErr(t, err, "read")
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read err = %v, want ECONNRESET", err)
	}
	var werr error
	for range 10 {
		if _, werr = s.Write([]byte("x")); werr != nil {
			break
		}
	}
	checkOpErr(t, werr, "write")
	if !errors.Is(werr, syscall.EPIPE) && !errors.Is(werr, syscall.ECONNRESET) {
		t.Fatalf("write err = %v, want EPIPE or ECONNRESET", werr)
	}
}

// checkOpErr checks that err is a *net.OpError for op, as the net
// package's own errors are.
func checkOpErr(t *testing.T, err error, op string) {
	t.Helper()
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != op || oe.Net != "tcp" || oe.Addr == nil {
		t.Fatalf("err = %#v (%v), want a *net.OpError for %q", err, err, op)
	}
}

func TestConcurrentReadWrite(t *testing.T) {
	c, s := pair(t)
	const n = 2000
	echoed := make(chan error, 1)
	go func() { // the server echoes
		buf := make([]byte, 64)
		for {
			k, err := s.Read(buf)
			if err != nil {
				echoed <- err
				return
			}
			if _, err := s.Write(buf[:k]); err != nil {
				echoed <- err
				return
			}
		}
	}()
	read := make(chan int, 1)
	go func() { // the client reads while it writes
		total := 0
		buf := make([]byte, 64)
		for total < n {
			k, err := c.Read(buf)
			if err != nil {
				break
			}
			total += k
		}
		read <- total
	}()
	for range n {
		if _, err := c.Write([]byte{'x'}); err != nil {
			t.Fatal(err)
		}
	}
	if got := <-read; got != n {
		t.Fatalf("read back %d bytes, want %d", got, n)
	}
	_ = c.Close()
	if err := <-echoed; !errors.Is(err, io.EOF) {
		t.Fatalf("server ended with %v, want io.EOF", err)
	}
}

func TestAllocs(t *testing.T) {
	c, s := pair(t)
	msg := []byte("ping")
	buf := make([]byte, 16)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per write and read, want 0", allocs)
	}
}

// TestWriteWait: WriteWait returns once the reply is there, and the next
// Read has it.
func TestWriteWait(t *testing.T) {
	c, s := pair(t)
	replied := make(chan struct{})
	go func() {
		buf := make([]byte, 4)
		if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
			t.Errorf("server read %q, %v", buf, err)
			return
		}
		time.Sleep(20 * time.Millisecond) // the client is waiting by now
		close(replied)
		if _, err := s.Write([]byte("pong")); err != nil {
			t.Error(err)
		}
	}()
	if n, err := c.WriteWait([]byte("ping")); n != 4 || err != nil {
		t.Fatalf("WriteWait = %d, %v; want 4, nil", n, err)
	}
	select {
	case <-replied:
	default:
		t.Fatal("WriteWait returned before the reply was sent")
	}
	buf := make([]byte, 8)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("Read = %q, %v; want pong", buf[:n], err)
	}
}

// TestWriteWaitFastReply: a reply that arrives while the callback still
// runs (or before the wait starts) is not missed.
func TestWriteWaitFastReply(t *testing.T) {
	c, s := pair(t)
	go func() {
		buf := make([]byte, 1)
		for i := 0; i < 500; i++ {
			if _, err := io.ReadFull(s, buf); err != nil {
				return
			}
			if _, err := s.Write(buf); err != nil {
				return
			}
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second)) // a missed reply fails, not hangs
	buf := make([]byte, 1)
	for i := 0; i < 500; i++ {
		if _, err := c.WriteWait([]byte{byte(i)}); err != nil {
			t.Fatalf("round %d: WriteWait: %v", i, err)
		}
		if _, err := io.ReadFull(c, buf); err != nil || buf[0] != byte(i) {
			t.Fatalf("round %d: Read = %v, %v", i, buf, err)
		}
	}
}

// TestWriteWaitDeadline: the read deadline bounds the wait; the Read after
// it reports the timeout, as a Read alone would.
func TestWriteWaitDeadline(t *testing.T) {
	c, s := pair(t)
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if n, err := c.WriteWait([]byte("ping")); n != 4 || err != nil {
		t.Fatalf("WriteWait = %d, %v; want 4, nil (the Read reports the wait's end)", n, err)
	}
	_, err := c.Read(make([]byte, 4))
	checkOpErr(t, err, "read")
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read err = %v, want a deadline error", err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("server read %q, %v", buf, err)
	}

	// A deadline already past: nothing is written.
	n, err := c.WriteWait([]byte("late"))
	checkOpErr(t, err, "write")
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("WriteWait past the deadline = %d, %v; want 0 and a deadline error", n, err)
	}
}

// TestWriteWaitPeerClosed: a peer that has gone ends the wait (its reset
// or EOF is readable) instead of leaving the caller to its deadline.
func TestWriteWaitPeerClosed(t *testing.T) {
	c, s := pair(t)
	_ = s.Close()
	time.Sleep(10 * time.Millisecond) // the FIN arrives before the write
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.WriteWait([]byte("ping")); err != nil {
		checkOpErr(t, err, "write")
		return // a reset already seen
	}
	_, err := c.Read(make([]byte, 4))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read after the peer closed = %v, want EOF or a reset", err)
	}
}

// TestWriteWaitLarge: a write larger than the socket takes at once is
// finished as Write would, and the reply is still read.
func TestWriteWaitLarge(t *testing.T) {
	c, s := pair(t)
	want := make([]byte, 8<<20)
	for i := range want {
		want[i] = byte(i * 13)
	}
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(want))
		time.Sleep(10 * time.Millisecond) // let the socket's buffers fill
		if _, err := io.ReadFull(s, b); err != nil {
			t.Error(err)
		}
		got <- b
		_, _ = s.Write([]byte("ok"))
	}()
	if n, err := c.WriteWait(want); n != len(want) || err != nil {
		t.Fatalf("WriteWait = %d, %v; want %d, nil", n, err, len(want))
	}
	if !bytes.Equal(<-got, want) {
		t.Fatal("bytes differ")
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ok" {
		t.Fatalf("Read = %q, %v", buf, err)
	}
}

func TestWriteWaitAllocs(t *testing.T) {
	c, s := pair(t)
	go func() {
		buf := make([]byte, 4)
		for {
			if _, err := io.ReadFull(s, buf); err != nil {
				return
			}
			if _, err := s.Write(buf); err != nil {
				return
			}
		}
	}()
	msg := []byte("ping")
	buf := make([]byte, 4)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := c.WriteWait(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per WriteWait and read, want 0", allocs)
	}
}

// tryUntil calls TryRead until it returns anything but ErrWouldBlock, for
// at most about ten seconds.
func tryUntil(t *testing.T, c *Conn, p []byte) (int, error) {
	t.Helper()
	for range 10000 {
		n, err := c.TryRead(p)
		if !errors.Is(err, ErrWouldBlock) {
			return n, err
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("TryRead found nothing for ten seconds")
	return 0, nil
}

// TestTryRead: TryRead returns at once when nothing is there, takes what
// is, and reports EOF; a Read after a TryRead that found nothing still
// wakes for data that comes later.
func TestTryRead(t *testing.T) {
	c, s := pair(t)
	buf := make([]byte, 8)
	if n, err := s.TryRead(buf); n != 0 || !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("TryRead with nothing there = %d, %v; want 0, ErrWouldBlock", n, err)
	}
	if n, err := s.TryRead(nil); n != 0 || err != nil {
		t.Fatalf("TryRead(nil) = %d, %v", n, err)
	}
	if _, err := c.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	if n, err := tryUntil(t, s, buf); err != nil || string(buf[:n]) != "abc" {
		t.Fatalf("TryRead = %q, %v; want \"abc\"", buf[:n], err)
	}
	// Nothing again: the wait of a Read that follows must not miss what
	// comes after.
	if _, err := s.TryRead(buf); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("TryRead = %v, want ErrWouldBlock", err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		_, _ = c.Write([]byte("later"))
	}()
	_ = s.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := s.Read(buf); err != nil || string(buf[:n]) != "later" {
		t.Fatalf("Read after TryRead = %q, %v; want \"later\"", buf[:n], err)
	}
	_ = c.Close()
	if n, err := tryUntil(t, s, buf); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("TryRead after the peer closed = %d, %v; want 0, io.EOF", n, err)
	}
	_ = s.Close()
	_, err := s.TryRead(buf)
	checkOpErr(t, err, "read")
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("TryRead on a closed conn = %v, want net.ErrClosed", err)
	}
}

func TestTryReadAllocs(t *testing.T) {
	_, s := pair(t)
	buf := make([]byte, 8)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := s.TryRead(buf); !errors.Is(err, ErrWouldBlock) {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per TryRead that finds nothing, want 0", allocs)
	}
}
