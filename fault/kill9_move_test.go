package fault_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestKill9SyncCLIMove kills flotta-sync move at random moments while a
// writer rewrites and adds files during the runs. After every kill, every
// file's latest version is still local or in the bucket with its content
// (nothing unconfirmed was removed); after the next complete run the source
// is empty (nothing confirmed was forgotten) and the bucket holds every
// latest version.
func TestKill9SyncCLIMove(t *testing.T) {
	crashesWanted := pick(10, 50)
	srv := startS3(t)
	client := srv.Client()
	rng := rand.New(rand.NewPCG(4, uint64(time.Now().UnixNano())))
	dir := filepath.Join(t.TempDir(), "export", "out")
	state := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // guards want, ver, written (the writer runs during moves)
	want := map[string][]byte{}
	ver := map[string]int{}
	written := map[string]bool{} // written since the last check
	write := func(rel string, size int) {
		mu.Lock()
		ver[rel]++
		b := makeVersion(rng, rel, ver[rel], size)
		mu.Unlock()
		if err := os.WriteFile(filepath.Join(dir, rel), b, 0o644); err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		want[rel], written[rel] = b, true
		mu.Unlock()
	}
	for i := range 40 {
		write(fmt.Sprintf("sub/f%03d", i), 1<<10+rng.IntN(256<<10))
	}
	write("big", 20<<20) // multipart: confirmed by its part ETags
	args := []string{"move", dir, "s3://" + bucket + "/mv", "--state", state, "--order-by", "modtime,descending"}

	// check: every latest version is local or in the bucket; counts the
	// names whose file was removed since the previous check.
	prev := map[string]bool{}
	check := func() (lost int, firstLost string, removed int) {
		objs, err := s3Objects(t, client, "mv/")
		if err != nil {
			t.Fatalf("list bucket: %v", err)
		}
		files, _, err := localFiles(dir)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		for rel, b := range want {
			if f, ok := files[rel]; ok && bytes.Equal(f, b) {
				continue
			}
			if o, ok := objs[rel]; ok && bytes.Equal(o, b) {
				continue
			}
			lost++
			if firstLost == "" {
				firstLost = rel
			}
		}
		for rel := range want {
			_, local := files[rel]
			if !local && (prev[rel] || written[rel]) {
				removed++
			}
		}
		prev, written = map[string]bool{}, map[string]bool{}
		for rel := range files {
			prev[rel] = true
		}
		return lost, firstLost, removed
	}

	// Its own generator: the writer draws from rng while a kill is timed.
	delay := &adaptiveDelay{rng: rand.New(rand.NewPCG(6, uint64(time.Now().UnixNano()))), hi: time.Second}
	crashes, attempts, lost, removed := 0, 0, 0, 0
	firstLost := ""
	for crashes < crashesWanted && attempts < 6*crashesWanted {
		attempts++
		for range 6 {
			write(fmt.Sprintf("sub/f%03d", rng.IntN(40)), 1<<10+rng.IntN(512<<10))
		}
		write(fmt.Sprintf("sub/n%03d", attempts), rng.IntN(64<<10))
		if attempts%4 == 0 {
			write("big", 17<<20+rng.IntN(4<<20))
		}
		// A writer races the run: rewrites (of files maybe uploaded,
		// maybe being removed) and new files.
		stop, done := make(chan struct{}), make(chan struct{})
		wrng := rand.New(rand.NewPCG(uint64(attempts), 5))
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(20+wrng.IntN(80)) * time.Millisecond):
				}
				rel := fmt.Sprintf("sub/f%03d", wrng.IntN(40))
				if i%3 == 0 {
					rel = fmt.Sprintf("sub/w%03d-%d", attempts, i)
				}
				write(rel, 1<<10+wrng.IntN(64<<10))
			}
		}()
		r := startCLI(t, srv, args...)
		interrupted := r.killAfter(delay.next())
		close(stop)
		<-done
		delay.feedback(interrupted)
		scanSecrets(t, "flotta-sync output", r.out.Bytes())
		if interrupted {
			crashes++
		}
		l, first, rm := check()
		lost += l
		removed += rm
		if firstLost == "" && first != "" {
			firstLost = fmt.Sprintf("%s (run %d)", first, attempts)
		}
	}
	finishCLI(t, srv, args...)
	l, first, rm := check()
	lost += l
	removed += rm
	if firstLost == "" && first != "" {
		firstLost = first + " (final)"
	}
	files, temps, err := localFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := s3Objects(t, client, "mv/")
	if err != nil {
		t.Fatal(err)
	}
	missing, differ, firstMissing := compare(want, objs)
	n, firstTorn := tornIn(objs)
	summary(t, "kill9 cli move: %d crashes (%d runs), %d files removed, %d lost, %d torn, %d left in the source after a complete run, %d temp; %d files, %d objects",
		crashes, attempts, removed, lost, n, len(files), len(temps), len(want), len(objs))
	if crashes < crashesWanted {
		t.Errorf("only %d of %d kills landed during a run", crashes, crashesWanted)
	}
	if lost > 0 {
		t.Errorf("%d file versions neither local nor in the bucket (first: %s)", lost, firstLost)
	}
	if missing+differ > 0 {
		t.Errorf("%d files not in the bucket with their latest content after a complete run (first: %s)", missing+differ, firstMissing)
	}
	if len(files) > 0 {
		t.Errorf("%d confirmed files left in the source after a complete run", len(files))
	}
	if n > 0 {
		t.Errorf("%d torn objects (first: %v)", n, firstTorn)
	}
	if removed == 0 {
		t.Error("nothing was ever removed: the test proves nothing")
	}
}
