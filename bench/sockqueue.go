package main

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// queued is what the kernel holds on the loopback connections of a port:
// bytes written and not yet acknowledged (the send queue) and bytes
// received and not yet read (the receive queue), on the server's side (local
// port = port) and on the clients' side (remote port = port). The proxy's
// own counts say what it read and wrote; with these, the bench knows what the
// client itself wrote and read, whatever the socket buffers absorb (several
// MiB on loopback).
type queued struct{ serverSend, serverRecv, clientSend, clientRecv int64 }

// socketQueues asks the kernel (NETLINK_INET_DIAG, as ss does) for the
// queues of every IPv4 TCP connection to or from port.
func socketQueues(port uint16) (queued, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_INET_DIAG)
	if err != nil {
		return queued{}, err
	}
	defer unix.Close(fd)
	// nlmsghdr (16) + inet_diag_req_v2 (56).
	req := make([]byte, 16+56)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], 1)
	req[16] = unix.AF_INET
	req[17] = unix.IPPROTO_TCP
	// Every state but LISTEN (10) and TIME_WAIT (6), which hold no data.
	binary.NativeEndian.PutUint32(req[20:], 0xffe&^(1<<10)&^(1<<6))
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return queued{}, err
	}
	var q queued
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return queued{}, err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return queued{}, err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return q, nil
			case unix.NLMSG_ERROR:
				return queued{}, fmt.Errorf("inet_diag: netlink error")
			}
			d := m.Data // inet_diag_msg: id at 4 (sport, dport big-endian), rqueue at 56, wqueue at 60
			if len(d) < 64 {
				continue
			}
			sport, dport := binary.BigEndian.Uint16(d[4:]), binary.BigEndian.Uint16(d[6:])
			rq, wq := int64(binary.NativeEndian.Uint32(d[56:])), int64(binary.NativeEndian.Uint32(d[60:]))
			switch {
			case sport == port:
				q.serverRecv += rq
				q.serverSend += wq
			case dport == port:
				q.clientRecv += rq
				q.clientSend += wq
			}
		}
	}
}
