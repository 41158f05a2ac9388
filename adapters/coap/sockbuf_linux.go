package coapadapter

import (
	"net"
	"syscall"
)

// setSocketBuffers sizes the socket's buffers: SO_RCVBUFFORCE/SNDBUFFORCE
// where permitted (CAP_NET_ADMIN), else as much as net.core.rmem_max
// allows. Errors only mean smaller buffers.
func setSocketBuffers(c *net.UDPConn, size int) {
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, size)
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, size)
		})
	}
	if n, err := readBuffer(c); err != nil || n < size {
		_ = c.SetReadBuffer(size)
		_ = c.SetWriteBuffer(size)
	}
}

// socketReadBuffer is the socket's receive buffer as the kernel reports
// it; 0 if unknown.
func socketReadBuffer(c *net.UDPConn) int {
	n, err := readBuffer(c)
	if err != nil {
		return 0
	}
	return n
}

// readBuffer reports the socket's receive buffer size.
func readBuffer(c *net.UDPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		n, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	}); err != nil {
		return 0, err
	}
	return n, serr
}
