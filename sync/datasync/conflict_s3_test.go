package datasync

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/keys"
)

// TestIngressConflictCopyOnS3 is TestUnitIngressConflictCopy against
// versitygw: the device's edit survives a new version of its object, and
// egress of the same directory does not upload the copy.
func TestIngressConflictCopyOnS3(t *testing.T) {
	f := newFixture(t)
	f.put("remote/cfg.yaml", []byte("v1"))
	f.configure(f.ingress("i", "data", "remote"), f.egress("e", "data", "back"))
	require.NoError(t, f.syncNow())
	assert.Equal(t, []byte("v1"), f.read("data/cfg.yaml"))

	f.write("data/cfg.yaml", []byte("edited on the device"))
	require.NoError(t, f.syncNow())
	assert.Equal(t, []byte("edited on the device"), f.read("data/cfg.yaml"), "object unchanged: the edit stays")

	f.put("remote/cfg.yaml", []byte("v2"))
	require.NoError(t, f.syncNow())
	assert.Equal(t, []byte("v2"), f.read("data/cfg.yaml"))
	copies := conflictCopies(t, filepath.Join(f.root, "data"))
	require.Len(t, copies, 1)
	assert.Regexp(t, `^cfg\.flotta-conflict-\d{8}T\d{6}Z\.yaml$`, copies[0])
	assert.Equal(t, []byte("edited on the device"), f.read("data/"+copies[0]))
	assert.Equal(t, int64(1), f.status("i").Conflicts)

	require.NoError(t, f.syncNow())
	for _, k := range f.listKeys("back/") {
		assert.False(t, keys.IsConflictCopy(k), "egress uploaded %s", k)
	}
	assert.Contains(t, f.listKeys("back/"), "back/cfg.yaml")
	assert.Equal(t, int64(1), f.status("i").Conflicts)
}

// TestMtimeMetadataOnS3: what egress uploads carries the file's mtime in
// X-Amz-Meta-Mtime, and ingress gives the file that mtime back, read from
// the GET response (no HEAD); an object without it gives its LastModified.
func TestMtimeMetadataOnS3(t *testing.T) {
	f := newFixture(t)
	f.write("out/a.txt", []byte("alpha"))
	mt := time.Date(2024, 12, 2, 19, 28, 7, 123456789, time.UTC)
	require.NoError(t, os.Chtimes(filepath.Join(f.root, "out/a.txt"), mt, mt))
	f.configure(f.egress("e", "out", "p"))
	require.NoError(t, f.syncNow())
	info, err := f.stat("p/a.txt")
	require.NoError(t, err)
	assert.Equal(t, "1733167687.123456789", lookup(info.UserMetadata, "Mtime"))

	f.configure(f.ingress("i", "in", "p"))
	f.count.Reset()
	require.NoError(t, f.syncNow())
	assert.Equal(t, int64(2), f.count.Requests(), "LIST and GET only")
	fi, err := os.Stat(filepath.Join(f.root, "in/a.txt"))
	require.NoError(t, err)
	assert.True(t, fi.ModTime().Equal(mt), "mtime %v, want %v", fi.ModTime(), mt)

	// An object without the metadata (another client put it): its
	// LastModified, as the server lists it and answers a HEAD.
	f.put("p/plain", []byte("plain"))
	require.NoError(t, f.syncNow())
	info, err = f.stat("p/plain")
	require.NoError(t, err)
	fi, err = os.Stat(filepath.Join(f.root, "in/plain"))
	require.NoError(t, err)
	assert.True(t, fi.ModTime().Equal(info.LastModified), "mtime %v, LastModified %v", fi.ModTime(), info.LastModified)
}
