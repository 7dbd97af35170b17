package datasync

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

func TestIngressFirstChangedUnchanged(t *testing.T) {
	f := newMemFixture(t)
	f.be.put("remote/data/a.txt", []byte("alpha"))
	f.be.put("remote/data/sub/b.bin", bytes.Repeat([]byte{1}, 70000))
	f.be.put("remote/data/dir/", nil) // a "directory" marker: skipped
	f.be.put("remote/other", []byte("not under the prefix"))
	f.configure(f.ingress("i1", "local/download/data", "remote/data"))

	require.NoError(t, f.syncNow())
	assert.Equal(t, []byte("alpha"), f.read("local/download/data/a.txt"))
	assert.Equal(t, bytes.Repeat([]byte{1}, 70000), f.read("local/download/data/sub/b.bin"))
	assert.NoDirExists(t, filepath.Join(f.root, "local/download/data/dir"))
	info, err := f.be.Stat(context.Background(), bucket, "remote/data/a.txt")
	require.NoError(t, err)
	fi, err := os.Stat(filepath.Join(f.root, "local/download/data/a.txt"))
	require.NoError(t, err)
	assert.True(t, fi.ModTime().Equal(info.LastModified), "mtime %v, LastModified %v", fi.ModTime(), info.LastModified)
	st := f.status("i1")
	assert.Equal(t, int64(2), st.FilesLastPass)
	assert.Equal(t, int64(70005), st.BytesLastPass)

	// Idle: one LIST page, nothing else.
	requests := f.be.requests()
	require.NoError(t, f.syncNow())
	assert.Equal(t, int64(1), f.be.requests()-requests)

	// The workload changes its copy; the object did not change: left alone.
	f.write("local/download/data/a.txt", []byte("local edit"))
	require.NoError(t, f.syncNow())
	assert.Equal(t, []byte("local edit"), f.read("local/download/data/a.txt"))

	// The object changes: the local file is replaced.
	f.be.put("remote/data/a.txt", []byte("alpha v2"))
	require.NoError(t, f.syncNow())
	assert.Equal(t, []byte("alpha v2"), f.read("local/download/data/a.txt"))
	assert.Equal(t, int64(1), f.status("i1").FilesLastPass)

	// Ingress never deletes local files.
	require.True(t, f.has("remote/data/sub/b.bin"))
	f.be.remove("remote/data/sub/b.bin")
	require.NoError(t, f.syncNow())
	assert.FileExists(t, filepath.Join(f.root, "local/download/data/sub/b.bin"))
}

func TestIngressPaginates(t *testing.T) {
	f := newFixture(t)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range 1005 {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f.put("p/"+strings.Repeat("x", i%7)+"-"+itoa(i), []byte(itoa(i)))
		})
	}
	wg.Wait()
	f.configure(f.ingress("i1", "in", "p"))
	require.NoError(t, f.syncNow())
	assert.Equal(t, int64(1005), f.status("i1").FilesLastPass)
	f.count.Reset()
	require.NoError(t, f.syncNow())
	assert.Equal(t, int64(2), f.count.Requests(), "an idle pass costs ⌈N/1000⌉ LIST requests")
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestIngressRefusesHostileKeys(t *testing.T) {
	f := newFixture(t)
	hostile := []string{"p/../x", "p//etc/x", "p/a/../../x", "p/a\x00b", "p/.flotta-tmp-1", "p/a/./b"}
	hostile[3] = "p/a\x00b"
	hostile[3] = "p/a" + string(rune(0)) + "b"
	f.put("p/good", []byte("ok"))
	// A symlinked directory inside the target pointing out of Root.
	outside := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(f.root, "in"), 0o755))
	require.NoError(t, os.Symlink(outside, filepath.Join(f.root, "in", "link")))
	f.put("p/link/evil", []byte("evil"))
	f.configure(f.ingress("i1", "in", "p"))
	f.interpose(func(rt http.RoundTripper) http.RoundTripper { return s3test.InjectKeys(rt, "", hostile) })

	f.count.Reset()
	require.NoError(t, f.syncNow(), "refusals are reported, not failures")
	assert.Equal(t, int64(2), f.count.Requests(), "LIST and the one good GET: hostile keys are never fetched")
	assert.Equal(t, []byte("ok"), f.read("in/good"))
	entries, err := os.ReadDir(outside)
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing may be written through the symlink")
	assert.NoFileExists(t, filepath.Join(filepath.Dir(f.root), "x"))
	st := f.status("i1")
	assert.Equal(t, int64(len(hostile)+1), st.Refused)
	assert.NotEmpty(t, st.LastError)

	// Refusals are remembered: the next pass downloads nothing and reports the same.
	f.count.Reset()
	require.NoError(t, f.syncNow())
	assert.Equal(t, int64(1), f.count.Requests())
	assert.Equal(t, int64(len(hostile)+1), f.status("i1").Refused)
	assert.Zero(t, f.status("i1").FilesLastPass)
}

func TestIngressQuota(t *testing.T) {
	f := newMemFixture(t)
	f.be.put("p/a", bytes.Repeat([]byte("a"), 100))
	f.be.put("p/b", bytes.Repeat([]byte("b"), 100))
	f.be.put("p/c", bytes.Repeat([]byte("c"), 30))
	m := f.ingress("i1", "in", "p")
	m.MaxBytes = 150
	f.configure(m)
	require.NoError(t, f.syncNow())
	st := f.status("i1")
	assert.Equal(t, int64(1), st.Refused, "one of the 100-byte objects does not fit")
	assert.Contains(t, st.LastError, "quota")
	assert.Equal(t, int64(2), st.FilesLastPass)
	var total int64
	for _, n := range []string{"a", "b", "c"} {
		if fi, err := os.Stat(filepath.Join(f.root, "in", n)); err == nil {
			total += fi.Size()
		}
	}
	assert.Equal(t, int64(130), total)

	// Room made: the refused object comes on the next pass.
	m.MaxBytes = 1000
	f.configure(m)
	require.NoError(t, f.syncNow())
	assert.Zero(t, f.status("i1").Refused)
	assert.Empty(t, f.status("i1").LastError)
	assert.Equal(t, int64(1), f.status("i1").FilesLastPass)
}

func TestIngressMinimumFreeSpace(t *testing.T) {
	f := newMemFixture(t, func(o *Options) { o.MinFreeBytes = 1000; o.MinFreePercent = -1 })
	f.eng.hooks.free = func(string) (uint64, uint64, error) { return 1100, 1 << 20, nil }
	f.be.put("p/small", bytes.Repeat([]byte("s"), 50))
	f.be.put("p/large", bytes.Repeat([]byte("l"), 500))
	f.configure(f.ingress("i1", "in", "p"))
	require.NoError(t, f.syncNow())
	assert.FileExists(t, filepath.Join(f.root, "in/small"))
	assert.NoFileExists(t, filepath.Join(f.root, "in/large"))
	st := f.status("i1")
	assert.Equal(t, int64(1), st.Refused)
	assert.Contains(t, st.LastError, "free space")
}

// cutBody cuts GET response bodies after n bytes, like a crash or a dropped
// connection in the middle of a download.
type cutBody struct {
	next http.RoundTripper
	n    int64
}

func (c *cutBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err == nil && r.Method == http.MethodGet && resp.StatusCode == http.StatusOK && r.URL.Query().Get("list-type") == "" {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(io.LimitReader(resp.Body, c.n), errReader{}), resp.Body}
	}
	return resp, err
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset (test)") }

func TestIngressInterruptedDownload(t *testing.T) {
	f := newFixture(t)
	data := bytes.Repeat([]byte("d"), 1<<20)
	f.put("p/big", data)
	f.configure(f.ingress("i1", "in", "p"))
	f.interpose(func(rt http.RoundTripper) http.RoundTripper { return &cutBody{next: rt, n: 1000} })

	require.Error(t, f.syncNow())
	assert.NoFileExists(t, filepath.Join(f.root, "in/big"))
	assert.Empty(t, tempFiles(t, filepath.Join(f.root, "in")), "a failed download leaves no temp file")
	assert.Equal(t, int64(1), f.status("i1").Pending)
	assert.NotEmpty(t, f.status("i1").LastError)

	// A crash leaves a temp file behind; the next engine removes it.
	require.NoError(t, os.WriteFile(filepath.Join(f.root, "in", ".flotta-tmp-deadbeef"), data[:1000], 0o644))
	f.wrap.Store(nil) // the link is whole again
	f.restartEngine()
	require.NoError(t, f.syncNow())
	assert.Equal(t, data, f.read("in/big"))
	assert.Empty(t, tempFiles(t, filepath.Join(f.root, "in")))
}

func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".flotta-tmp-") {
			out = append(out, p)
		}
		return err
	}))
	return out
}

func minioStat() minio.StatObjectOptions { return minio.StatObjectOptions{} }
