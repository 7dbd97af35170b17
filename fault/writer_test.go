package fault_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// engineFor is an in-process engine on srv with one egress mapping
// root/out → prefix, passes every interval, no disk guard.
func engineFor(t *testing.T, srv *s3test.Server, root string, interval time.Duration, ms ...datasync.Mapping) *datasync.Engine {
	t.Helper()
	eng, err := datasync.New(datasync.Options{StateDir: t.TempDir(), Interval: interval, MinFreeBytes: -1, MinFreePercent: -1}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	ak, sk := srv.Credentials()
	ep := &datasync.Endpoint{Host: srv.Host, Port: srv.Port, Region: s3test.Region, AccessKey: ak, SecretKey: sk}
	if err := eng.Configure(ep, ms); err != nil {
		t.Fatal(err)
	}
	return eng
}

// stallGap is a pause inside a write after which the engine may see the file
// as settled. Its settle time is 50 ms of mtime age, but the kernel stamps
// mtime from a coarse clock (a jiffy, up to 10 ms behind) and the writer's own
// clock reads add a little: 20 ms leaves room for both. Writers hold their
// pauses under 10 ms, so only a stalled writer reaches it.
const stallGap = 20 * time.Millisecond

// TestWriterFuzz rewrites, appends to and replaces files continuously while
// egress passes run; every object ever seen in the bucket must be a complete
// version of its file, and once the writers stop the bucket equals the files.
//
// Writers pause at most 10 ms inside a write, well under the engine's settle
// time (50 ms): a writer that stops half-way for longer leaves a file that is
// indistinguishable from a complete one, which no uploader can detect.
func TestWriterFuzz(t *testing.T) {
	duration := pick(15*time.Second, 120*time.Second)
	const writers, perWriter = 3, 4
	srv := startS3(t)
	root := filepath.Join(t.TempDir(), "export")
	out := filepath.Join(root, "out")
	scratch := filepath.Join(root, "scratch") // for replace-by-rename, outside the mapping
	for _, d := range []string{out, scratch} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := datasync.Mapping{ID: "fuzz", Direction: datasync.Egress, Root: root, LocalDir: out, Bucket: bucket, Prefix: "fuzz"}
	eng := engineFor(t, srv, root, 200*time.Millisecond, m)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan struct{})
	go func() { _ = eng.Run(ctx); close(runDone) }()

	var writes, rewrites, appends, replaces atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var writeErr atomic.Value
	// A writer stalled inside a write for longer than the settle time (the
	// scheduler of a loaded machine can do that) leaves a half-written file
	// that looks finished: its size then is recorded, and an object of
	// exactly that size is counted as a stalled-writer snapshot, not torn.
	var stallMu sync.Mutex
	stalled := map[string]map[int]bool{}
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			current := map[string][]byte{} // last complete version per file
			ver := map[string]int{}
			pause := func() {
				if rng.IntN(4) == 0 {
					time.Sleep(time.Duration(rng.IntN(10_000)) * time.Microsecond)
				}
			}
			var last time.Time
			var lastSize int64
			// mark notes the file's size now; when the time since the
			// previous mark was long enough for the engine to see the file
			// settled, both sizes it had meanwhile are recorded (a WriteAt
			// throttled by writeback leaves the size before it visible).
			mark := func(name string, size int64) {
				now := time.Now()
				if !last.IsZero() && now.Sub(last) >= stallGap {
					stallMu.Lock()
					if stalled[name] == nil {
						stalled[name] = map[int]bool{}
					}
					stalled[name][int(lastSize)] = true
					stalled[name][int(size)] = true
					stallMu.Unlock()
				}
				last, lastSize = now, size
			}
			// writeChunks writes b at offset off in 16 KiB chunks with pauses;
			// the file is off bytes long when it is called.
			writeChunks := func(name string, f *os.File, off int64, b []byte) error {
				lastSize = off
				for len(b) > 0 {
					n := min(len(b), 16<<10)
					mark(name, off)
					if _, err := f.WriteAt(b[:n], off); err != nil {
						return err
					}
					off += int64(n)
					b = b[n:]
					pause()
				}
				mark(name, off)
				last = time.Time{}
				return nil
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("w%d/f%d", w, rng.IntN(perWriter))
				p := filepath.Join(out, name)
				_ = os.MkdirAll(filepath.Dir(p), 0o755)
				old, exists := current[name]
				var err error
				switch op := rng.IntN(10); {
				case !exists || op < 4: // rewrite in place
					ver[name]++
					b := makeVersion(rng, name, ver[name], 16<<10+rng.IntN(2<<20))
					var f *os.File
					last = time.Now()
					if f, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644); err == nil {
						err = writeChunks(name, f, 0, b)
						f.Close()
					}
					current[name] = b
					rewrites.Add(1)
				case op < 8: // append: drop the trailer, add a chunk and a new trailer
					body := old[:len(old)-trailerLen]
					extra := makeVersion(rng, "x", 0, 4<<10+rng.IntN(256<<10))
					nb := append(append([]byte(nil), body...), extra...)
					b := append(nb, trailer(nb)...)
					var f *os.File
					if f, err = os.OpenFile(p, os.O_WRONLY, 0o644); err == nil {
						last = time.Now()
						if err = f.Truncate(int64(len(body))); err == nil {
							err = writeChunks(name, f, int64(len(body)), b[len(body):])
						}
						f.Close()
					}
					current[name] = b
					appends.Add(1)
				default: // replace atomically
					ver[name]++
					b := makeVersion(rng, name, ver[name], 16<<10+rng.IntN(1<<20))
					tmp := filepath.Join(scratch, fmt.Sprintf("w%d.tmp", w))
					if err = os.WriteFile(tmp, b, 0o644); err == nil {
						err = os.Rename(tmp, p)
					}
					current[name] = b
					replaces.Add(1)
				}
				if err != nil {
					writeErr.Store(err)
					return
				}
				writes.Add(1)
				time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
			}
		})
	}

	// Sample the bucket throughout.
	client := srv.Client()
	checked, torn, snapshots, empties, samples := 0, 0, 0, 0, 0
	var firstTorn error
	// An incomplete object is judged once the writers stopped: a writer
	// records its stall only when it resumes, which may be after the sample.
	type suspect struct {
		key  string
		size int
		err  error
	}
	var suspects []suspect
	classify := func(objs map[string][]byte) {
		checked += len(objs)
		for k, b := range objs {
			if err := checkVersion(k, b); err != nil {
				suspects = append(suspects, suspect{k, len(b), err})
			}
		}
	}
	judge := func() {
		for _, s := range suspects {
			if stalled[s.key][s.size] {
				snapshots++
				continue
			}
			if s.size == 0 {
				// A rewrite in place truncates first: the empty file is a
				// real state of it, which any uploader may see. Counted and
				// reported, not torn.
				empties++
				continue
			}
			torn++
			if firstTorn == nil {
				firstTorn = s.err
			}
		}
	}
	end := time.Now().Add(duration)
	for time.Now().Before(end) {
		objs, err := s3Objects(t, client, "fuzz/")
		if err != nil {
			t.Fatalf("list bucket: %v", err)
		}
		samples++
		classify(objs)
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if err := writeErr.Load(); err != nil {
		t.Fatalf("writer: %v", err)
	}
	cancel()
	<-runDone
	uploads := eng.Status()[0].FilesTotal

	// Writers stopped: the bucket converges to the files.
	want, _, err := localFiles(out)
	if err != nil {
		t.Fatal(err)
	}
	var missing, differ int
	var firstLost string
	for range 5 {
		sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
		_ = eng.SyncNow(sctx)
		scancel()
		objs, err := s3Objects(t, client, "fuzz/")
		if err != nil {
			t.Fatal(err)
		}
		classify(objs)
		if missing, differ, firstLost = compare(want, objs); missing+differ == 0 {
			break
		}
	}
	judge()
	summary(t, "writer fuzz: %d files, %d writes (%d rewrites, %d appends, %d replaces) in %s, %d uploads, %d objects checked in %d samples, %d torn (%d stalled-writer snapshots and %d empty truncated states excused), final %d/%d equal",
		len(want), writes.Load(), rewrites.Load(), appends.Load(), replaces.Load(), duration, uploads, checked, samples, torn, snapshots, empties,
		len(want)-missing-differ, len(want))
	if torn > 0 {
		t.Errorf("%d torn objects (first: %v)", torn, firstTorn)
	}
	if missing+differ > 0 {
		t.Errorf("after the writers stopped, %d files are not in the bucket with their content (first: %s)", missing+differ, firstLost)
	}
	if uploads == 0 {
		t.Errorf("nothing was uploaded while the writers ran")
	}
}
