package datasync

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/s3client"
	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// benchEnv is a server, a directory of files and a counting engine factory.
type benchEnv struct {
	b     *testing.B
	srv   *s3test.Server
	root  string
	count *s3client.Counter
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	return &benchEnv{b: b, srv: s3test.Start(b, s3test.WithBuckets(bucket)), root: b.TempDir(), count: &s3client.Counter{}}
}

// writeSmallFiles writes n files of size bytes in directories of 100.
func (e *benchEnv) writeSmallFiles(sub string, n, size int) {
	e.b.Helper()
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	var wg sync.WaitGroup
	for d := 0; d < n/100; d++ {
		wg.Go(func() {
			dir := filepath.Join(e.root, sub, fmt.Sprintf("d%03d", d))
			require.NoError(e.b, os.MkdirAll(dir, 0o755))
			for i := range 100 {
				require.NoError(e.b, os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", i)), data, 0o644))
			}
		})
	}
	wg.Wait()
	time.Sleep(100 * time.Millisecond) // older than the settle time
}

// seedObjects puts n objects of size bytes under prefix (uploaded by an
// engine from files written for it).
func (e *benchEnv) seedObjects(prefix string, n, size int) {
	e.b.Helper()
	e.writeSmallFiles("seed-"+prefix, n, size)
	up := e.engine(e.mapping(Egress, "seed-"+prefix, prefix))
	e.sync(up)
	require.NoError(e.b, up.Close())
}

// engine returns an engine with a fresh journal syncing m.
func (e *benchEnv) engine(m Mapping) *Engine {
	e.b.Helper()
	eng, err := New(Options{StateDir: e.b.TempDir(), MinFreeBytes: -1, MinFreePercent: -1,
		WrapTransport: e.count.Wrap}, nil)
	require.NoError(e.b, err)
	ep := &Endpoint{Host: e.srv.Host, Port: e.srv.Port, Region: s3test.Region, AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey}
	require.NoError(e.b, eng.Configure(ep, []Mapping{m}))
	return eng
}

func (e *benchEnv) mapping(dir Direction, sub, prefix string) Mapping {
	return Mapping{ID: "bench", Direction: dir, Root: e.root, LocalDir: filepath.Join(e.root, sub), Bucket: bucket, Prefix: prefix}
}

func (e *benchEnv) sync(eng *Engine) {
	e.b.Helper()
	require.NoError(e.b, eng.SyncNow(context.Background()))
}

// BenchmarkEgressFirst10kSmall uploads 10,000 files of 4 KiB to a new prefix
// with a new journal (after a listing for adoption that finds nothing).
func BenchmarkEgressFirst10kSmall(b *testing.B) {
	e := newBenchEnv(b)
	e.writeSmallFiles("out", 10000, 4096)
	b.SetBytes(10000 * 4096)
	e.count.Reset()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		eng := e.engine(e.mapping(Egress, "out", fmt.Sprintf("first%d", i)))
		b.StartTimer()
		e.sync(eng)
		b.StopTimer()
		require.Equal(b, int64(10000), eng.Status()[0].FilesLastPass)
		require.NoError(b, eng.Close())
		b.StartTimer()
	}
	b.ReportMetric(float64(e.count.Requests())/float64(b.N), "requests/op")
}

// BenchmarkEgressIdle10k is a pass over 10,000 unchanged files.
func BenchmarkEgressIdle10k(b *testing.B) {
	e := newBenchEnv(b)
	e.writeSmallFiles("out", 10000, 4096)
	eng := e.engine(e.mapping(Egress, "out", "idle"))
	defer eng.Close()
	e.sync(eng)
	e.count.Reset()
	for b.Loop() {
		e.sync(eng)
	}
	b.ReportMetric(float64(e.count.Requests())/float64(b.N), "requests/op")
}

// BenchmarkEgressLargeFile uploads one 256 MiB file (multipart).
func BenchmarkEgressLargeFile(b *testing.B) {
	e := newBenchEnv(b)
	f, err := os.Create(filepath.Join(e.root, "big"))
	require.NoError(b, err)
	chunk := bytes.Repeat([]byte("large file bench"), 1<<16) // 1 MiB
	for range 256 {
		_, err := f.Write(chunk)
		require.NoError(b, err)
	}
	require.NoError(b, f.Close())
	require.NoError(b, os.MkdirAll(filepath.Join(e.root, "out"), 0o755))
	require.NoError(b, os.Rename(filepath.Join(e.root, "big"), filepath.Join(e.root, "out", "big")))
	time.Sleep(100 * time.Millisecond)
	b.SetBytes(256 << 20)
	e.count.Reset()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		eng := e.engine(e.mapping(Egress, "out", fmt.Sprintf("large%d", i)))
		b.StartTimer()
		e.sync(eng)
		b.StopTimer()
		require.NoError(b, eng.Close())
		b.StartTimer()
	}
	b.ReportMetric(float64(e.count.Requests())/float64(b.N), "requests/op")
}

// BenchmarkIngressFirst10kSmall downloads 10,000 objects of 4 KiB into an
// empty directory with a new journal.
func BenchmarkIngressFirst10kSmall(b *testing.B) {
	e := newBenchEnv(b)
	e.seedObjects("objects", 10000, 4096)
	b.SetBytes(10000 * 4096)
	e.count.Reset()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		eng := e.engine(e.mapping(Ingress, fmt.Sprintf("in%d", i), "objects"))
		b.StartTimer()
		e.sync(eng)
		b.StopTimer()
		require.Equal(b, int64(10000), eng.Status()[0].FilesLastPass)
		require.NoError(b, eng.Close())
		b.StartTimer()
	}
	b.ReportMetric(float64(e.count.Requests())/float64(b.N), "requests/op")
}

// BenchmarkIngressIdle10k is a pass over a prefix of 10,000 objects already
// downloaded: what an idle ingress mapping costs at every poll.
func BenchmarkIngressIdle10k(b *testing.B) {
	e := newBenchEnv(b)
	e.seedObjects("objects", 10000, 4096)
	eng := e.engine(e.mapping(Ingress, "in", "objects"))
	defer eng.Close()
	e.sync(eng)
	require.Equal(b, int64(10000), eng.Status()[0].FilesLastPass)
	e.count.Reset()
	for b.Loop() {
		e.sync(eng)
	}
	b.ReportMetric(float64(e.count.Requests())/float64(b.N), "requests/op")
}
