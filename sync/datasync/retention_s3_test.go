package datasync

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Against versitygw: uploads confirmed by the server's real ETags (one PUT
// and multipart), removed; their objects hold the content; the newest
// files go up first.
func TestRetentionOnServer(t *testing.T) {
	f := newFixture(t)
	m := f.egress("e", "out", "dev")
	m.Retention.RemoveAfterUpload = true
	m.Order = NewestFirst
	f.configure(m)
	want := map[string][]byte{}
	base := time.Now().Add(-time.Hour)
	for i := range 5 {
		rel := fmt.Sprintf("f%d", i)
		want[rel] = bytes.Repeat([]byte{byte('a' + i)}, 1000+i)
		f.write("out/"+rel, want[rel])
		require.NoError(t, os.Chtimes(filepath.Join(f.root, "out", rel), base, base.Add(time.Duration(i)*time.Second)))
	}
	want["big"] = bytes.Repeat([]byte("0123456789abcdef"), (singlePutMax+(1<<20))/16)
	f.write("out/big", want["big"])
	require.NoError(t, f.syncNow())

	for rel, b := range want {
		assert.Equal(t, b, f.mustGet("dev/"+rel), rel)
		_, err := os.Lstat(filepath.Join(f.root, "out", rel))
		assert.True(t, os.IsNotExist(err), "%s removed after its confirmed upload", rel)
	}
	st := f.status("e")
	assert.Equal(t, int64(len(want)), st.RemovedFiles)
	n, err := f.eng.jr.Rows("e", 0)
	require.NoError(t, err)
	assert.Zero(t, n, "no row of removed files")
	assert.Empty(t, st.LastError)
}
