package datasync

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/keys"
	"github.com/project-flotta/flotta-device-worker/sync/safefs"
)

// localNames lists the final files and the temporary files under dir.
func localNames(t *testing.T, dir string) (files, temps []string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		if strings.HasPrefix(d.Name(), keys.TempPrefix) {
			temps = append(temps, p)
		} else {
			files = append(files, p)
		}
		return nil
	})
	require.NoError(t, err)
	return files, temps
}

// unnamedOpen counts the unnamed temporary files (O_TMPFILE) this process
// holds open under dir: downloads written and not yet linked in place.
func unnamedOpen(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	n := 0
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.HasPrefix(target, dir+"/") && strings.HasSuffix(target, " (deleted)") {
			n++
		}
	}
	return n
}

// putSmall puts n small objects under in/ in three directories, and one
// object too big for a group; it returns what each local file must hold.
func putSmall(f *memFixture, n int) map[string][]byte {
	want := map[string][]byte{}
	for i := range n {
		rel := fmt.Sprintf("d%d/o%03d", i%3, i)
		b := bytes.Repeat([]byte{byte(i)}, 1000+i*7)
		f.be.put("in/"+rel, b)
		want[rel] = b
	}
	big := bytes.Repeat([]byte("big"), (groupMaxSize+1024)/3)
	f.be.put("in/big", big)
	want["big"] = big
	return want
}

func checkLocal(t *testing.T, f *memFixture, want map[string][]byte) {
	t.Helper()
	for rel, b := range want {
		require.Equal(t, b, f.read(filepath.Join("in", rel)), rel)
	}
	files, temps := localNames(t, filepath.Join(f.root, "in"))
	require.Len(t, files, len(want))
	require.Empty(t, temps)
}

// TestIngressGroupCommit: small downloads wait, sealed (unnamed, or beside
// their final names), for a syncfs that covers them, and only then are
// linked or renamed in place; many share one syncfs.
func TestIngressGroupCommit(t *testing.T) {
	f := newMemFixture(t)
	const n = 300
	want := putSmall(f, n)
	in := filepath.Join(f.root, "in")
	var (
		mu            sync.Mutex
		syncs         int
		finalAtFirst  = -1
		sealedAtFirst int
	)
	f.eng.hooks.syncGroup = func(dir *safefs.Dir) error {
		mu.Lock()
		first := syncs == 0
		syncs++
		mu.Unlock()
		if first {
			// Hold the first syncfs until 50 files are sealed and waiting
			// (or 30 s passed): none may have its final name yet.
			deadline := time.Now().Add(30 * time.Second)
			for {
				files, temps := localNames(t, in)
				sealed := len(temps) + unnamedOpen(t, in)
				if sealed >= 50 || time.Now().After(deadline) {
					mu.Lock()
					finalAtFirst, sealedAtFirst = 0, sealed
					for _, p := range files {
						if filepath.Base(p) != "big" { // fsynced on its own
							finalAtFirst++
						}
					}
					mu.Unlock()
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		return dir.SyncFS()
	}
	f.configure(f.ingress("in", "in", "in"))
	require.NoError(t, f.syncNow())
	checkLocal(t, f, want)
	require.Equal(t, 0, finalAtFirst, "a small file got its final name before any syncfs")
	require.GreaterOrEqual(t, sealedAtFirst, 50, "files did not wait, sealed, for the first syncfs")
	require.Less(t, syncs, n-40, "syncfs calls were not shared")
	require.EqualValues(t, n+1, f.status("in").FilesLastPass)
}

// TestIngressGroupCommitFailure: when the syncfs fails, no file of the group
// gets its final name, no temporary file stays, the pass fails, and the next
// pass downloads them all.
func TestIngressGroupCommitFailure(t *testing.T) {
	f := newMemFixture(t)
	want := putSmall(f, 40)
	var fail bool
	var calls int
	f.eng.hooks.syncGroup = func(dir *safefs.Dir) error {
		calls++ // one syncer goroutine at a time
		if fail {
			return errors.New("injected write error")
		}
		return dir.SyncFS()
	}
	fail = true
	f.configure(f.ingress("in", "in", "in"))
	err := f.syncNow()
	require.ErrorContains(t, err, "injected write error")
	require.Positive(t, calls)
	files, temps := localNames(t, filepath.Join(f.root, "in"))
	require.Equal(t, []string{filepath.Join(f.root, "in", "big")}, files, "only the fsynced big file may be in place")
	require.Empty(t, temps)
	require.EqualValues(t, 40, f.status("in").Pending)

	fail = false
	require.NoError(t, f.syncNow())
	checkLocal(t, f, want)
}

// TestGroupCommitGathersAStream: while downloads stream in, the syncer
// pauses before each syncfs so that one covers more files: at most half
// the syncfs calls of the same stream without the pause.
func TestGroupCommitGathersAStream(t *testing.T) {
	stream := func(gather int) int64 {
		var syncs atomic.Int64
		g := &groupCommit{slots: make(chan struct{}, groupWaiters), gather: gather, sync: func() error {
			syncs.Add(1)
			time.Sleep(2 * time.Millisecond) // a syncfs
			return nil
		}}
		var wg sync.WaitGroup
		for range 400 {
			wg.Go(func() { require.NoError(t, g.durable()) })
			time.Sleep(250 * time.Microsecond)
		}
		wg.Wait()
		return syncs.Load()
	}
	without, with := stream(0), stream(groupGatherFactor)
	t.Logf("400 files: %d syncfs without the pause, %d with it", without, with)
	require.LessOrEqual(t, with*2, without)
}
