package fault_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/project-flotta/flotta-device-worker/fault/linksim"
	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// The link of issue 25: a long round trip, a thin uplink, and a proxy that
// acknowledges what the device sends at once (split TCP).
var edgeLink = linksim.Config{Latency: 150 * time.Millisecond, Jitter: 30 * time.Millisecond,
	Up: 128 << 10, Down: 256 << 10, SplitTCP: true}

// startLink runs a link simulator in front of srv for the test.
func startLink(t *testing.T, srv *s3test.Server, cfg linksim.Config) *linksim.Link {
	t.Helper()
	l, err := linksim.Start(srv.Endpoint(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// cliThrough runs flotta-sync to its end against the link.
func cliThrough(t *testing.T, l *linksim.Link, args ...string) ([]byte, error, time.Duration) {
	t.Helper()
	if args[0] == "pull" {
		args = append(args, "--min-free", "-1")
	}
	cmd := exec.Command(filepath.Join(binDir, "flotta-sync"), append(args, "--endpoint", "http://"+l.Addr())...)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+accessKey, "AWS_SECRET_ACCESS_KEY="+secretKey)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	scanSecrets(t, "flotta-sync output", out.Bytes())
	return out.Bytes(), err, time.Since(start)
}

// writeTree writes n self-checking files of up to maxSize bytes under dir
// (and one of big bytes when big > 0) and returns them by relative path.
func writeTree(t *testing.T, rng *rand.Rand, dir string, n, maxSize, big int) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	add := func(rel string, size int) {
		b := makeVersion(rng, rel, 1, size)
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, rel), b, 0o644); err != nil {
			t.Fatal(err)
		}
		files[rel] = b
	}
	for i := range n {
		add(fmt.Sprintf("f/s%03d", i), 1+rng.IntN(maxSize))
	}
	if big > 0 {
		add("f/big", big)
	}
	return files
}

// TestEdgeLinkPushPull: the tree of issue 25 (small files and one of 1 MiB,
// scaled down) through the slow, long, buffering link, with the silent
// timeout at 2 s: the 1 MiB body is acknowledged by the proxy at once and
// answered only when it has trickled through (about 8 s), so a deadline that
// took that wait for a dead server fails the push on every try. Push and pull
// complete in one run each, and both sides hold every file whole.
func TestEdgeLinkPushPull(t *testing.T) {
	srv := startS3(t)
	l := startLink(t, srv, edgeLink)
	rng := rand.New(rand.NewPCG(25, uint64(time.Now().UnixNano())))
	src := t.TempDir()
	want := writeTree(t, rng, src, pick(100, 300), 4<<10, 1<<20)

	out, err, push := cliThrough(t, l, "push", src, "s3://"+bucket+"/edge", "--state", t.TempDir(), "--silent-timeout", "2s")
	if err != nil {
		t.Fatalf("push through the edge link failed after %s: %v\n%s", push, err, out)
	}
	up, err := s3Objects(t, srv.Client(), "edge/")
	if err != nil {
		t.Fatal(err)
	}
	if m, d, first := compare(want, up); m+d > 0 {
		t.Fatalf("after push: %d missing, %d differ (first %s)", m, d, first)
	}
	dst := t.TempDir()
	out, err, pull := cliThrough(t, l, "pull", "s3://"+bucket+"/edge", dst, "--state", t.TempDir(), "--silent-timeout", "2s")
	if err != nil {
		t.Fatalf("pull through the edge link failed after %s: %v\n%s", pull, err, out)
	}
	got, temps, err := localFiles(dst)
	if err != nil {
		t.Fatal(err)
	}
	if m, d, first := compare(want, got); m+d > 0 || len(temps) > 0 {
		t.Fatalf("after pull: %d missing, %d differ (first %s), %d temp files", m, d, first, len(temps))
	}
	summary(t, "edge link (150±30 ms each way, 128 KiB/s up, 256 KiB/s down, split TCP): %d files pushed in %s, pulled in %s",
		len(want), push.Round(100*time.Millisecond), pull.Round(100*time.Millisecond))
}

// TestEdgeLinkResets: pushes through a link that resets a connection every
// 256 KiB sent (bodies cut short half way), run after run until one
// completes. After every run, each file the journal claims (a dry run no
// longer lists it) is in the bucket whole, and no object is torn.
func TestEdgeLinkResets(t *testing.T) {
	srv := startS3(t)
	cfg := linksim.Config{Latency: 20 * time.Millisecond, Jitter: 10 * time.Millisecond, Up: 1 << 20, Down: 2 << 20,
		SplitTCP: true, ResetEvery: 256 << 10}
	l := startLink(t, srv, cfg)
	rng := rand.New(rand.NewPCG(26, uint64(time.Now().UnixNano())))
	src := t.TempDir()
	want := writeTree(t, rng, src, pick(60, 200), 150<<10, 0)
	names := make([]string, 0, len(want))
	for k := range want {
		names = append(names, k)
	}
	slices.Sort(names)
	state := t.TempDir()
	args := []string{src, "s3://" + bucket + "/resets", "--state", state}
	runs, claimedNotWhole := 0, 0
	var done bool
	for runs < 12 && !done {
		runs++
		_, runErr, _ := cliThrough(t, l, append([]string{"push"}, args...)...)
		done = runErr == nil
		plan, _, _ := cliThrough(t, l, append([]string{"push", "--dry-run"}, args...)...)
		up, err := s3Objects(t, srv.Client(), "resets/")
		if err != nil {
			t.Fatal(err)
		}
		if n, first := tornIn(up); n > 0 {
			t.Fatalf("run %d: %d torn objects (first %v)", runs, n, first)
		}
		claimed := 0
		for _, n := range names {
			if bytes.Contains(plan, []byte("resets/"+n+"\n")) || bytes.Contains(plan, []byte("resets/"+n+" ")) {
				continue // still to upload
			}
			claimed++
			if !bytes.Equal(up[n], want[n]) {
				claimedNotWhole++
				t.Errorf("run %d: %s is claimed but the bucket does not hold it whole (%d of %d bytes)", runs, n, len(up[n]), len(want[n]))
			}
		}
		t.Logf("run %d: ok %v, %d resets so far, %d of %d claimed", runs, runErr == nil, l.Resets(), claimed, len(names))
		if done && claimed != len(names) {
			t.Errorf("a complete run leaves %d files unclaimed:\n%s", len(names)-claimed, plan)
		}
	}
	if !done {
		t.Fatalf("no push completed in %d runs", runs)
	}
	if l.Resets() == 0 {
		t.Fatal("the link reset nothing: the test proved nothing")
	}
	summary(t, "edge link resets: %d runs, %d connections reset, %d files claimed, %d claimed but not whole",
		runs, l.Resets(), len(names), claimedNotWhole)
}

// TestEdgeLinkWorker: the worker's end-to-end path (devdispatcher, the
// configuration message, the engine) through a long, thin, buffering link
// that also resets connections (a body is cut short now and then): egress
// and ingress converge, no object is torn and no partial file is visible.
func TestEdgeLinkWorker(t *testing.T) {
	srv := startS3(t)
	cfg := edgeLink
	cfg.Latency, cfg.Jitter = 100*time.Millisecond, 20*time.Millisecond
	cfg.Up, cfg.Down, cfg.ResetEvery = 256<<10, 512<<10, 384<<10 // past the largest body, which may still be cut
	l := startLink(t, srv, cfg)
	r := newWorkerRig(t, srv, filepath.Join(t.TempDir(), "data"), "FLOTTA_SYNC_INTERVAL=1s", "FLOTTA_S3_SILENT_TIMEOUT=2s")
	// The message points the device at the link, not at the server.
	msg := message(srv, "1", accessKey, secretKey, []dataPath{{"out", "up"}}, []dataPath{{"down", "in"}})
	host, port, _ := strings.Cut(l.Addr(), ":")
	s3 := msg["configuration"].(map[string]any)["storage"].(map[string]any)["s3"].(map[string]any)
	var p int
	fmt.Sscan(port, &p)
	s3["bucket_host"], s3["bucket_port"] = "http://"+host, p
	r.msg = writeJSON(t, filepath.Join(t.TempDir(), "msg.json"), msg)
	for i := range pick(40, 120) {
		r.writeLocal(fmt.Sprintf("f%03d", i), 1+r.rng.IntN(96<<10))
	}
	r.writeLocal("big", 256<<10)
	for i := range pick(20, 60) {
		r.putRemote(fmt.Sprintf("o%03d", i), 1+r.rng.IntN(96<<10))
	}
	watch := watchPartials(r.in)
	d := r.start()
	s, took := r.converge(pick(120*time.Second, 300*time.Second))
	d.stop()
	scans, partial, firstPartial := watch.close()
	summary(t, "edge link worker (100±20 ms, 256 KiB/s up, 512 KiB/s down, split TCP, reset every 384 KiB): %d up, %d down converged in %s, %d resets, %d lost, %d torn, %d partial (%d scans), %d temp",
		len(r.wantUp), len(r.wantIn), took.Round(100*time.Millisecond), l.Resets(), s.lostUp+s.lostIn, s.tornUp, partial+s.partialIn, scans, s.temps)
	if s.lostUp+s.lostIn > 0 {
		t.Errorf("not converged: %d up, %d down missing or different (first: %s)", s.lostUp, s.lostIn, s.first)
	}
	if l.Resets() == 0 {
		t.Error("the link reset nothing: the test proved less than it says")
	}
	if s.tornUp > 0 || partial+s.partialIn > 0 {
		t.Errorf("%d torn objects, %d partial files (first %v)", s.tornUp, partial+s.partialIn, firstPartial)
	}
}
