package datasync

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReconcileRepairsBothWays: an egress
// object deleted or replaced behind the device's back is uploaded again, a
// file deleted from an ingress target is downloaded again, rows of what is
// gone are pruned, and it costs one LIST per 1,000 objects.
func TestReconcileRepairsBothWays(t *testing.T) {
	f := newMemFixture(t)
	for i := range 1500 {
		f.write(filepath.Join("out", "d"+itoa(i/100), "f"+itoa(i)), []byte("x"))
	}
	f.write("out/keep", []byte("mine"))
	f.be.put("cfg/a", []byte("alpha"))
	f.be.put("cfg/b", []byte("bravo"))
	f.configure(f.egress("e", "out", "dev"), f.ingress("i", "in", "cfg"))
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, f.syncNow())

	// Behind the device's back.
	ctx := context.Background()
	f.be.remove("dev/d3/f300")
	f.be.put("dev/keep", []byte("theirs"))
	require.NoError(t, os.Remove(filepath.Join(f.root, "in/a")))
	f.be.remove("cfg/b")
	require.NoError(t, os.Remove(filepath.Join(f.root, "out/d0/f0")))

	// A normal pass sees none of it; it prunes the rows of what is gone.
	require.NoError(t, f.syncNow())
	assert.Zero(t, f.status("e").FilesLastPass)
	assert.NoFileExists(t, filepath.Join(f.root, "in/a"))
	n, err := f.eng.jr.Rows("e", 0)
	require.NoError(t, err)
	assert.Equal(t, 1500, n, "1,501 files, one deleted")
	n, err = f.eng.jr.Rows("i", 0)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "cfg/b deleted")

	requests := f.be.requests()
	require.NoError(t, f.eng.Sync(ctx, PassOptions{Reconcile: true}))
	assert.Equal(t, []byte("x"), f.mustGet("dev/d3/f300"))
	assert.Equal(t, []byte("mine"), f.mustGet("dev/keep"))
	assert.Equal(t, int64(2), f.status("e").FilesLastPass)
	assert.Equal(t, []byte("alpha"), f.read("in/a"))
	assert.FileExists(t, filepath.Join(f.root, "in/b"), "ingress never deletes")
	// 2 LISTs for 1,501 objects, 1 for the ingress prefix, 2 PUTs, 1 GET.
	assert.Equal(t, int64(6), f.be.requests()-requests)

	requests = f.be.requests()
	require.NoError(t, f.eng.Sync(ctx, PassOptions{Reconcile: true}))
	assert.Equal(t, int64(3), f.be.requests()-requests, "a reconcile with nothing lost only lists")
	assert.Equal(t, bytes.Repeat([]byte("x"), 1), f.mustGet("dev/d9/f999"))
}
