//go:build !linux

package coapadapter

import "net"

// setSocketBuffers asks for size bytes of socket buffers; the OS may give
// less. Errors only mean smaller buffers.
func setSocketBuffers(c *net.UDPConn, size int) {
	_ = c.SetReadBuffer(size)
	_ = c.SetWriteBuffer(size)
}

// socketReadBuffer is unknown here.
func socketReadBuffer(*net.UDPConn) int { return 0 }
