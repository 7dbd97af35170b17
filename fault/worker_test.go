package fault_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// workerRig is a device: a data dir, a message with storage on srv, the
// egress dir w/out → up/ and the ingress prefix down/ → w/in.
type workerRig struct {
	t       *testing.T
	srv     *s3test.Server
	client  *minio.Client
	dataDir string
	msg     string
	env     []string
	rng     *rand.Rand
	out, in string
	wantUp  map[string][]byte // local files of w/out
	wantIn  map[string][]byte // objects under down/
	ver     map[string]int
}

func newWorkerRig(t *testing.T, srv *s3test.Server, dataDir string, env ...string) *workerRig {
	t.Helper()
	r := &workerRig{t: t, srv: srv, client: srv.Client(), dataDir: dataDir,
		rng:    rand.New(rand.NewPCG(4, uint64(time.Now().UnixNano()))),
		wantUp: map[string][]byte{}, wantIn: map[string][]byte{}, ver: map[string]int{}}
	r.out = filepath.Join(dataDir, "volumes", "w", "out")
	r.in = filepath.Join(dataDir, "volumes", "w", "in")
	r.msg = writeJSON(t, filepath.Join(t.TempDir(), "msg.json"),
		message(srv, "1", accessKey, secretKey, []dataPath{{"out", "up"}}, []dataPath{{"down", "in"}}))
	r.env = append([]string{"FLOTTA_PODMAN_SOCKET=" + deadPodman}, env...)
	if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "FLOTTA_MIN_FREE=") }) {
		r.env = append(r.env, "FLOTTA_MIN_FREE=-1")
	}
	if err := os.MkdirAll(r.out, 0o755); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *workerRig) writeLocal(rel string, size int) {
	r.ver["l/"+rel]++
	b := makeVersion(r.rng, rel, r.ver["l/"+rel], size)
	p := filepath.Join(r.out, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		r.t.Fatal(err)
	}
	r.wantUp[rel] = b
}

func (r *workerRig) putRemote(rel string, size int) {
	r.ver["r/"+rel]++
	b := makeVersion(r.rng, rel, r.ver["r/"+rel], size)
	putObject(r.t, r.client, "down/"+rel, b)
	r.wantIn[rel] = b
}

func (r *workerRig) start(args ...string) *dispatcher {
	// A delivery before registration is dropped (as by yggd): resend soon.
	return startDispatcher(r.t, r.dataDir, r.msg, r.env, append([]string{"--resend", "200ms"}, args...)...)
}

// state compares the bucket and the device with what they should hold.
type rigState struct {
	lostUp, lostIn, tornUp, partialIn, temps int
	first                                    string
}

func (r *workerRig) state() rigState {
	var s rigState
	up, err := s3Objects(r.t, r.client, "up/")
	if err != nil {
		r.t.Fatalf("list bucket: %v", err)
	}
	m, d, f := compare(r.wantUp, up)
	s.lostUp, s.first = m+d, f
	s.tornUp, _ = tornIn(up)
	in, temps, err := localFiles(r.in)
	if err != nil {
		r.t.Fatal(err)
	}
	m, d, f = compare(r.wantIn, in)
	s.lostIn = m + d
	if s.first == "" {
		s.first = f
	}
	s.partialIn, _ = tornIn(in)
	s.temps = len(temps)
	return s
}

// converge waits until everything is in place, or timeout.
func (r *workerRig) converge(timeout time.Duration) (rigState, time.Duration) {
	start := time.Now()
	for {
		s := r.state()
		if s.lostUp+s.lostIn+s.temps == 0 || time.Since(start) > timeout {
			return s, time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKill9Worker kills the worker with SIGKILL at random moments of its
// passes (egress and ingress both busy), restarting it each time; objects
// are never torn, no partial file is visible, and once it runs undisturbed
// everything converges with no temp file left.
func TestKill9Worker(t *testing.T) {
	crashesWanted := pick(6, 50)
	srv := startS3(t)
	r := newWorkerRig(t, srv, filepath.Join(t.TempDir(), "data"), "FLOTTA_SYNC_INTERVAL=1s")
	for i := range 30 {
		r.writeLocal(fmt.Sprintf("f%02d", i), 1<<10+r.rng.IntN(256<<10))
		r.putRemote(fmt.Sprintf("o%02d", i), 1<<10+r.rng.IntN(256<<10))
	}
	watch := watchPartials(r.in)
	crashes, torn, tempsSeen := 0, 0, 0
	// How far each life got before its kill: files in place out of those wanted.
	var doneUp, doneIn, wantedUp, wantedIn int
	var firstTorn error
	for life := 0; crashes < crashesWanted && life < 3*crashesWanted; life++ {
		for range 12 {
			r.writeLocal(fmt.Sprintf("f%02d", r.rng.IntN(30)), 1<<10+r.rng.IntN(3<<20))
			r.putRemote(fmt.Sprintf("o%02d", r.rng.IntN(30)), 1<<10+r.rng.IntN(3<<20))
		}
		r.writeLocal(fmt.Sprintf("new/f%03d", life), r.rng.IntN(64<<10))
		r.putRemote(fmt.Sprintf("new/o%03d", life), r.rng.IntN(64<<10))
		// One life per dispatcher: its restart delay would otherwise grow.
		d := r.start("--restart-delay", "10m")
		pid := d.workerPID(0)
		// Passes start within an interval of the endpoint being configured
		// (after the podman apply fails): kill within the next passes.
		d.waitLog("sync endpoint configured", 20*time.Second)
		time.Sleep(time.Duration(200+r.rng.IntN(2000)) * time.Millisecond)
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			d.wait("worker-exit", 0, 10*time.Second, kind("worker-exit"))
			crashes++
		}
		d.stop()
		up, err := s3Objects(t, r.client, "up/")
		if err != nil {
			t.Fatal(err)
		}
		n, first := tornIn(up)
		torn += n
		if firstTorn == nil {
			firstTorn = first
		}
		in, temps, _ := localFiles(r.in)
		tempsSeen += len(temps)
		m, dd, _ := compare(r.wantUp, up)
		doneUp, wantedUp = doneUp+len(r.wantUp)-m-dd, wantedUp+len(r.wantUp)
		m, dd, _ = compare(r.wantIn, in)
		doneIn, wantedIn = doneIn+len(r.wantIn)-m-dd, wantedIn+len(r.wantIn)
	}
	// An undisturbed life: everything converges.
	d := r.start()
	s, took := r.converge(60 * time.Second)
	d.stop()
	scans, partial, firstPartial := watch.close()
	summary(t, "kill9 worker: %d crashes, %d lost (%d up, %d down), %d torn, %d partial (%d directory scans), %d temp (%d seen right after crashes); converged in %s; in place when killed: %d%% up, %d%% down",
		crashes, s.lostUp+s.lostIn, s.lostUp, s.lostIn, torn+s.tornUp, partial+s.partialIn, scans, s.temps, tempsSeen, took.Round(100*time.Millisecond),
		100*doneUp/max(wantedUp, 1), 100*doneIn/max(wantedIn, 1))
	if crashes < crashesWanted {
		t.Errorf("only %d of %d kills", crashes, crashesWanted)
	}
	if s.lostUp+s.lostIn > 0 {
		t.Errorf("not converged: %d up, %d down missing or different (first: %s)", s.lostUp, s.lostIn, s.first)
	}
	if torn+s.tornUp > 0 {
		t.Errorf("%d torn objects (first: %v)", torn+s.tornUp, firstTorn)
	}
	if partial+s.partialIn > 0 {
		t.Errorf("%d partial files visible (first: %v)", partial+s.partialIn, firstPartial)
	}
	if s.temps > 0 {
		t.Errorf("%d temp files left after the next passes", s.temps)
	}
}
