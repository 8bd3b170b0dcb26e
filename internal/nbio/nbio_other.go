//go:build !linux

package nbio

import "net"

// Wrap returns nc: raw reads and writes are built for Linux only.
func Wrap(nc net.Conn) net.Conn { return nc }
