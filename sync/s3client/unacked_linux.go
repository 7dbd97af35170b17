package s3client

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// unacked is the number of bytes written to c that the peer has not yet
// acknowledged (SIOCOUTQ), or -1 when it cannot be told.
func unacked(c net.Conn) int {
	for i := 0; i < 8; i++ {
		if u, ok := c.(interface{ NetConn() net.Conn }); ok {
			c = u.NetConn()
			continue
		}
		break
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	n := -1
	_ = raw.Control(func(fd uintptr) {
		if v, err := unix.IoctlGetInt(int(fd), unix.SIOCOUTQ); err == nil {
			n = v
		}
	})
	return n
}
