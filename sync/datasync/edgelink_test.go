package datasync

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/fault/linksim"
	"github.com/project-flotta/flotta-device-worker/sync/s3client"
)

// TestEgressThroughABufferingLink: a proxy acknowledges each body at once
// and trickles it to the server at 256 KiB/s with 100 ms each way; the
// silent-server limit is 1 s, far less than the 512 KiB file needs to get
// through. The answer is awaited at the floor rate, so the pass moves every
// file, and the objects are the files.
func TestEgressThroughABufferingLink(t *testing.T) {
	t.Parallel() // mostly waits: see waitingTests
	f := newFixture(t, func(o *Options) {
		o.Timeouts = s3client.Timeouts{Dial: time.Second, TLSHandshake: time.Second, Progress: time.Second, FloorRate: 64 << 10}
	})
	l, err := linksim.Start(f.srv.Endpoint(), linksim.Config{Latency: 100 * time.Millisecond, Jitter: 20 * time.Millisecond,
		Up: 256 << 10, Down: 512 << 10, SplitTCP: true})
	require.NoError(t, err)
	defer l.Close()
	host, port, _ := net.SplitHostPort(l.Addr())
	f.ep.Host = host
	f.ep.Port, _ = strconv.Atoi(port)

	big := bytes.Repeat([]byte("b"), 512<<10)
	f.write("out/big", big)
	for i := range 40 {
		f.write(fmt.Sprintf("out/s%02d", i), bytes.Repeat([]byte{byte(i)}, 4<<10))
	}
	f.configure(f.egress("e", "out", "p"))
	start := time.Now()
	require.NoError(t, f.syncNow())
	took := time.Since(start)
	assert.Greater(t, took, 2*time.Second, "the link did not slow the pass: the test proves nothing")
	assert.Equal(t, big, f.mustGet("p/big"))
	assert.Equal(t, bytes.Repeat([]byte{7}, 4<<10), f.mustGet("p/s07"))
	assert.Equal(t, int64(41), f.status("e").FilesLastPass)
	t.Logf("41 files, 672 KiB through 256 KiB/s and 200 ms round trips in %s", took.Round(time.Millisecond))
}
