package fault_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// cliRun is one flotta-sync process.
type cliRun struct {
	cmd    *exec.Cmd
	out    syncBuffer
	exited chan struct{}
	err    error
}

func startCLI(t *testing.T, srv *s3test.Server, args ...string) *cliRun {
	t.Helper()
	if len(args) > 0 && args[0] == "pull" {
		args = append(args, "--min-free", "-1") // the guard is tested on its own; push has none
	}
	return startCLIWith(t, srv, accessKey, secretKey, args...)
}

// startCLIWith runs flotta-sync -v against srv with the given credentials.
func startCLIWith(t *testing.T, srv *s3test.Server, access, secret string, args ...string) *cliRun {
	t.Helper()
	args = append(args, "--endpoint", srv.URL(), "-v")
	r := &cliRun{exited: make(chan struct{})}
	r.cmd = exec.Command(filepath.Join(binDir, "flotta-sync"), args...)
	r.cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+access, "AWS_SECRET_ACCESS_KEY="+secret)
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start flotta-sync: %v", err)
	}
	go func() { r.err = r.cmd.Wait(); close(r.exited) }()
	return r
}

// killAfter kills the run with SIGKILL after d, unless it already ended;
// it reports whether the kill interrupted it.
func (r *cliRun) killAfter(d time.Duration) bool {
	select {
	case <-r.exited:
		return false
	case <-time.After(d):
	}
	killed := r.cmd.Process.Signal(syscall.SIGKILL) == nil
	<-r.exited
	// Still counted only when the process had not finished on its own.
	if ws, ok := r.cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		return killed && ws.Signaled() && ws.Signal() == syscall.SIGKILL
	}
	return false
}

// finish runs flotta-sync to completion, a few times if a pass leaves work
// pending (a file still settling), and returns its last output.
func finishCLI(t *testing.T, srv *s3test.Server, args ...string) []byte {
	t.Helper()
	var out []byte
	for i := range 4 {
		r := startCLI(t, srv, args...)
		<-r.exited
		out = r.out.Bytes()
		scanSecrets(t, "flotta-sync output", out)
		if r.err == nil {
			return out
		}
		t.Logf("flotta-sync pass %d: %v: %s", i, r.err, out)
	}
	t.Fatalf("flotta-sync never completed a pass:\n%s", out)
	return nil
}

// adaptiveDelay picks kill delays that land inside the passes: it shrinks
// when a run ended before its kill and grows when it was interrupted.
type adaptiveDelay struct {
	rng *rand.Rand
	hi  time.Duration
}

func (a *adaptiveDelay) next() time.Duration {
	return time.Duration(a.rng.Int64N(int64(a.hi))) + time.Millisecond
}

func (a *adaptiveDelay) feedback(interrupted bool) {
	if interrupted {
		a.hi = min(a.hi*11/10, 5*time.Second)
	} else {
		a.hi = max(a.hi*6/10, 30*time.Millisecond)
	}
}

// TestKill9SyncCLIPush kills flotta-sync push at random moments while files
// change between runs; objects must never be torn and, after the next
// complete pass, every local file is in the bucket with its content.
func TestKill9SyncCLIPush(t *testing.T) {
	crashesWanted := pick(10, 50)
	srv := startS3(t)
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	dir := filepath.Join(t.TempDir(), "export", "out")
	state := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	ver := map[string]int{}
	write := func(rel string, size int) {
		ver[rel]++
		b := makeVersion(rng, rel, ver[rel], size)
		if err := os.WriteFile(filepath.Join(dir, rel), b, 0o644); err != nil {
			t.Fatal(err)
		}
		want[rel] = b
	}
	for i := range 40 {
		write(fmt.Sprintf("sub/f%03d", i), 1<<10+rng.IntN(256<<10))
	}
	write("big", 20<<20) // multipart (> 16 MiB)
	args := []string{"push", dir, "s3://" + bucket + "/up", "--state", state}
	client := srv.Client()

	delay := &adaptiveDelay{rng: rng, hi: time.Second}
	crashes, attempts, torn := 0, 0, 0
	var firstTorn error
	for crashes < crashesWanted && attempts < 6*crashesWanted {
		attempts++
		// New work for this run: rewrites and new files.
		for range 8 {
			write(fmt.Sprintf("sub/f%03d", rng.IntN(40)), 1<<10+rng.IntN(512<<10))
		}
		write(fmt.Sprintf("sub/n%03d", attempts), rng.IntN(64<<10))
		if attempts%4 == 0 {
			write("big", 17<<20+rng.IntN(4<<20))
		}
		r := startCLI(t, srv, args...)
		interrupted := r.killAfter(delay.next())
		delay.feedback(interrupted)
		scanSecrets(t, "flotta-sync output", r.out.Bytes())
		if interrupted {
			crashes++
		}
		objs, err := s3Objects(t, client, "up/")
		if err != nil {
			t.Fatalf("list bucket: %v", err)
		}
		n, first := tornIn(objs)
		torn += n
		if firstTorn == nil {
			firstTorn = first
		}
	}
	finishCLI(t, srv, args...)
	objs, err := s3Objects(t, client, "up/")
	if err != nil {
		t.Fatal(err)
	}
	missing, differ, firstLost := compare(want, objs)
	n, first := tornIn(objs)
	torn += n
	if firstTorn == nil {
		firstTorn = first
	}
	_, temps, _ := localFiles(dir)
	summary(t, "kill9 cli push: %d crashes (%d runs), %d lost, %d torn, 0 partial, %d temp; %d files, %d objects",
		crashes, attempts, missing+differ, torn, len(temps), len(want), len(objs))
	if crashes < crashesWanted {
		t.Errorf("only %d of %d kills landed during a pass", crashes, crashesWanted)
	}
	if missing+differ > 0 {
		t.Errorf("%d files not in the bucket with their content after a complete pass (first: %s)", missing+differ, firstLost)
	}
	if torn > 0 {
		t.Errorf("%d torn objects (first: %v)", torn, firstTorn)
	}
	if len(temps) > 0 {
		t.Errorf("temp files in the source: %v", temps)
	}
}

// partialWatcher reads the visible files of dir over and over while a
// download runs: each must be a complete version.
type partialWatcher struct {
	dir     string
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	scans   int
	partial int
	first   error
}

func watchPartials(dir string) *partialWatcher {
	w := &partialWatcher{dir: dir, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			w.scan()
			time.Sleep(3 * time.Millisecond)
		}
	}()
	return w
}

func (w *partialWatcher) scan() {
	files, _, err := localFiles(w.dir)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		return
	}
	w.scans++
	for rel, b := range files {
		if err := checkVersion(rel, b); err != nil {
			w.partial++
			if w.first == nil {
				w.first = err
			}
		}
	}
}

func (w *partialWatcher) close() (scans, partial int, first error) {
	close(w.stop)
	<-w.done
	w.scan()
	return w.scans, w.partial, w.first
}

// TestKill9SyncCLIPull kills flotta-sync pull at random moments while the
// objects change between runs; no partial file may ever be visible (a
// watcher reads the directory throughout), and after the next complete pass
// every object is local with its content and no temp file is left.
func TestKill9SyncCLIPull(t *testing.T) {
	crashesWanted := pick(10, 50)
	srv := startS3(t)
	client := srv.Client()
	rng := rand.New(rand.NewPCG(2, uint64(time.Now().UnixNano())))
	dir := filepath.Join(t.TempDir(), "export", "in")
	state := t.TempDir()
	want := map[string][]byte{}
	ver := map[string]int{}
	put := func(rel string, size int) {
		ver[rel]++
		b := makeVersion(rng, rel, ver[rel], size)
		putObject(t, client, "down/"+rel, b)
		want[rel] = b
	}
	for i := range 40 {
		put(fmt.Sprintf("d%d/o%03d", i%4, i), 1<<10+rng.IntN(256<<10))
	}
	// Many small ones: they are made durable in groups (one syncfs, then
	// the renames), so kills land between a group's sync and its renames.
	for i := range 300 {
		put(fmt.Sprintf("s%d/o%03d", i%3, i), 100+rng.IntN(4<<10))
	}
	put("big", 8<<20)
	args := []string{"pull", "s3://" + bucket + "/down", dir, "--state", state}

	watch := watchPartials(dir)
	delay := &adaptiveDelay{rng: rng, hi: time.Second}
	crashes, attempts, tempsSeen := 0, 0, 0
	for crashes < crashesWanted && attempts < 6*crashesWanted {
		attempts++
		for range 8 {
			i := rng.IntN(40)
			put(fmt.Sprintf("d%d/o%03d", i%4, i), 1<<10+rng.IntN(512<<10))
		}
		put(fmt.Sprintf("new/n%03d", attempts), rng.IntN(64<<10))
		for range 30 {
			i := rng.IntN(300)
			put(fmt.Sprintf("s%d/o%03d", i%3, i), 100+rng.IntN(4<<10))
		}
		if attempts%4 == 0 {
			put("big", 6<<20+rng.IntN(4<<20))
		}
		r := startCLI(t, srv, args...)
		interrupted := r.killAfter(delay.next())
		delay.feedback(interrupted)
		scanSecrets(t, "flotta-sync output", r.out.Bytes())
		if interrupted {
			crashes++
			_, temps, _ := localFiles(dir)
			tempsSeen += len(temps)
		}
	}
	finishCLI(t, srv, args...)
	scans, partial, firstPartial := watch.close()
	files, temps, err := localFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	missing, differ, firstLost := compare(want, files)
	summary(t, "kill9 cli pull: %d crashes (%d runs), %d lost, 0 torn, %d partial (%d directory scans), %d temp (%d seen right after crashes, swept); %d objects",
		crashes, attempts, missing+differ, partial, scans, len(temps), tempsSeen, len(want))
	if crashes < crashesWanted {
		t.Errorf("only %d of %d kills landed during a pass", crashes, crashesWanted)
	}
	if missing+differ > 0 {
		t.Errorf("%d objects not local with their content after a complete pass (first: %s)", missing+differ, firstLost)
	}
	if partial > 0 {
		t.Errorf("%d partial files seen under their final name (first: %v)", partial, firstPartial)
	}
	if len(temps) > 0 {
		t.Errorf("temp files left after a complete pass: %v", temps)
	}
}

// TestTornDetector proves the checks above can fail: a truncated, an
// extended, a spliced and a swapped version are all caught.
func TestTornDetector(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	v1 := makeVersion(rng, "a", 1, 100<<10)
	v2 := makeVersion(rng, "a", 2, 100<<10)
	other := makeVersion(rng, "b", 1, 100<<10)
	cases := map[string][]byte{
		"truncated":   v1[:len(v1)-1],
		"half":        v1[:len(v1)/2],
		"empty":       nil,
		"extended":    append(bytes.Clone(v1), 'x'),
		"spliced":     append(bytes.Clone(v1[:50<<10]), v2[50<<10:]...),
		"other file":  other,
		"one bit off": func() []byte { b := bytes.Clone(v1); b[7] ^= 1; return b }(),
	}
	caught := 0
	for name, b := range cases {
		if err := checkVersion("a", b); err == nil {
			t.Errorf("%s version not caught", name)
		} else {
			caught++
		}
	}
	if err := checkVersion("a", v1); err != nil {
		t.Errorf("a complete version is refused: %v", err)
	}
	// And the comparisons catch a lost file.
	if m, d, _ := compare(map[string][]byte{"a": v1, "b": other}, map[string][]byte{"a": v2}); m != 1 || d != 1 {
		t.Errorf("compare: %d missing, %d differ; want 1 and 1", m, d)
	}
	// The bucket view sees a torn object put there on purpose.
	srv := startS3(t)
	putObject(t, srv.Client(), "torn/a", v1[:len(v1)-10])
	objs, err := s3Objects(t, srv.Client(), "torn/")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := tornIn(objs); n != 1 {
		t.Errorf("a torn object in the bucket: detector found %d", n)
	} else {
		caught++
	}
	summary(t, "torn detector: %d/%d deliberately torn versions caught", caught, len(cases)+1)
}
