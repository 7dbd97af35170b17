package fault_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDiskFullIngress gives the worker a 16 MiB tmpfs as its data dir (so
// the ingress target, and the journal, live on it) and 24 MiB to download
// with FLOTTA_MIN_FREE=4 MiB: the guard must stop before the disk fills,
// the worker must keep running, and its heartbeats must report the refusal.
func TestDiskFullIngress(t *testing.T) {
	const objects, size = 24, 1 << 20
	const minFree = 4 << 20
	srv := startS3(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	mountTmpfs(t, dataDir, "size=16m")
	r := newWorkerRig(t, srv, dataDir, "FLOTTA_SYNC_INTERVAL=1s", fmt.Sprintf("FLOTTA_MIN_FREE=%d", minFree))
	for i := range objects {
		r.putRemote(fmt.Sprintf("o%02d", i), size-trailerLen)
	}

	// Watch the free space throughout.
	var mu sync.Mutex
	lowest := uint64(1 << 62)
	stop, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		for {
			var st unix.Statfs_t
			if unix.Statfs(dataDir, &st) == nil {
				mu.Lock()
				lowest = min(lowest, st.Bavail*uint64(st.Bsize))
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()

	d := r.start()
	pid := d.workerPID(0)
	// Wait until the ingress mapping has refused something and then kept
	// reporting it for a few heartbeats.
	deadline := time.Now().Add(40 * time.Second)
	reporting, afterRefusal, events := 0, 0, 0
	var last string
	for time.Now().Before(deadline) {
		reporting, afterRefusal, events = 0, 0, 0
		seenRefusal := false
		for _, hb := range d.heartbeats(0) {
			if seenRefusal {
				afterRefusal++
			}
			for _, m := range hb.DataSync {
				if m.ID == "w/ingress/in" && m.Refused > 0 {
					reporting++
					seenRefusal = true
					last = fmt.Sprintf("refused %d, last_error %q", m.Refused, m.LastError)
				}
			}
			for _, e := range hb.Events {
				if e.Reason == "DataSyncRefused" && strings.Contains(e.Message, "free space") {
					events++
				}
			}
		}
		if afterRefusal >= 3 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	<-watched
	running := alive(pid)
	files, temps, err := localFiles(r.in)
	if err != nil {
		t.Fatal(err)
	}
	partial, firstPartial := tornIn(files)
	d.stop()
	exits := 0
	for _, rec := range d.since(0) {
		if rec.str("kind") == "worker-exit" {
			exits++
		}
	}
	exits-- // the one quit caused
	enospc := bytes.Count(d.stderr.Bytes(), []byte("no space left on device"))
	mu.Lock()
	low := lowest
	mu.Unlock()
	summary(t, "disk full: %d objects (%d MiB) into a 16 MiB tmpfs with min free %d MiB: %d written, %d not written, lowest free %.1f MiB, %d partial, %d temp, %d ENOSPC in logs, %d unexpected worker exits, %d heartbeats reporting the refusal (%d events)",
		objects, objects*size>>20, minFree>>20, len(files), objects-len(files), float64(low)/(1<<20), partial, len(temps), enospc, exits, reporting, events)
	t.Logf("last report: %s", last)
	if !running || exits > 0 {
		t.Errorf("the worker did not keep running (alive %v, %d exits)", running, exits)
	}
	if low < minFree/2 {
		t.Errorf("free space fell to %d bytes: the guard (min free %d) did not stop in time", low, minFree)
	}
	if len(files) == 0 || len(files) == objects {
		t.Errorf("%d of %d objects written: the test did not hit the guard", len(files), objects)
	}
	if afterRefusal < 3 || reporting == 0 || events == 0 {
		t.Errorf("heartbeats did not report the refusal (%d reporting, %d events, %d heartbeats after it)", reporting, events, afterRefusal)
	}
	if partial > 0 || len(temps) > 0 {
		t.Errorf("%d partial files (first %v), temp files %v", partial, firstPartial, temps)
	}
	if enospc > 0 {
		t.Errorf("the worker hit ENOSPC %d times", enospc)
	}
}
