package fault_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// TestS3Outage stops the S3 server in the middle of a pass for a while
// (8 s, 60 s in the long variant) and starts it again: the worker must not
// crash, must not spin (its CPU time while waiting stays low and passes stay
// an interval apart), must report the outage in its heartbeats, and must
// converge within one interval of the server's return.
func TestS3Outage(t *testing.T) {
	outage := pick(8*time.Second, 60*time.Second)
	const interval = 2 * time.Second
	const maxCPUShare = 0.05 // of one core, while the server is down
	srv := startS3(t)
	r := newWorkerRig(t, srv, filepath.Join(t.TempDir(), "data"), "FLOTTA_SYNC_INTERVAL="+interval.String())
	for i := range 10 {
		r.writeLocal(fmt.Sprintf("a%02d", i), 64<<10)
	}
	d := r.start()
	if s, _ := r.converge(30 * time.Second); s.lostUp+s.lostIn > 0 {
		t.Fatalf("no initial convergence: %+v", s)
	}
	pid := d.workerPID(0)

	// Work for the next pass; stop the server once it is under way.
	for i := range 40 {
		r.writeLocal(fmt.Sprintf("b%02d", i), 256<<10+r.rng.IntN(768<<10))
		r.putRemote(fmt.Sprintf("b%02d", i), 256<<10+r.rng.IntN(768<<10))
	}
	deadline := time.Now().Add(3 * interval)
	var atStop rigState
	for {
		atStop = r.state()
		if atStop.lostUp < 40 || atStop.lostIn < 40 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv.Stop()
	down := time.Now()
	from := d.count()
	ticks0, err := cpuTicks(pid)
	if err != nil {
		t.Fatalf("worker cpu: %v", err)
	}
	time.Sleep(outage)
	ticks1, err := cpuTicks(pid)
	if err != nil {
		t.Fatalf("the worker died during the outage: %v", err)
	}
	cpu := time.Duration(float64(ticks1-ticks0) / ticksPerSecond * float64(time.Second))
	share := cpu.Seconds() / outage.Seconds()

	// What the heartbeats said while the server was down.
	// Pass attempts per mapping. Ingress polls every interval whatever
	// happens; egress, which a healthy file-system watcher covers, only
	// needs a pass while something failed (the uploads the outage
	// interrupted, if it caught any).
	attempts := map[string]map[time.Time]bool{}
	degraded, hbs := 0, 0
	for _, hb := range d.heartbeats(from) {
		hbs++
		if hb.Status == "degraded" {
			for _, m := range hb.DataSync {
				if m.LastError != "" {
					degraded++
					break
				}
			}
		}
		for _, m := range hb.DataSync {
			if m.LastAttempt.After(down) {
				if attempts[m.ID] == nil {
					attempts[m.ID] = map[time.Time]bool{}
				}
				attempts[m.ID][m.LastAttempt] = true
			}
		}
	}

	srv.Restart()
	s, took := r.converge(5 * interval)
	exits := 0
	for _, rec := range d.since(0) {
		if rec.str("kind") == "worker-exit" {
			exits++
		}
	}
	const egress, ingress = "w/egress/out", "w/ingress/in"
	summary(t, "s3 outage: %s down mid-pass (%d/%d up, %d/%d down already moved), worker cpu %.2fs (%.1f%% of a core), %d egress and %d ingress passes while down (interval %s), %d/%d heartbeats reporting the error, %d worker exits, converged %.1fs after the server returned, %d lost",
		outage, 40-atStop.lostUp, 40, 40-atStop.lostIn, 40, cpu.Seconds(), 100*share, len(attempts[egress]), len(attempts[ingress]), interval, degraded, hbs, exits,
		took.Seconds(), s.lostUp+s.lostIn)
	if exits > 0 || !alive(pid) {
		t.Errorf("the worker exited (%d exits)", exits)
	}
	if share > maxCPUShare {
		t.Errorf("the worker used %.1f%% of a core while the server was down (max %.0f%%): it spins", 100*share, 100*maxCPUShare)
	}
	for id, a := range attempts {
		if maxPasses := int(outage/interval) + 2; len(a) > maxPasses {
			t.Errorf("%s: %d passes during a %s outage with a %s interval (max %d): no back-off", id, len(a), outage, interval, maxPasses)
		}
	}
	// Egress may rightly make none (its uploads can all finish before the
	// server is gone); converging within an interval below shows it did not
	// leave interrupted uploads to its 5 min safety-net pass.
	if len(attempts[ingress]) == 0 {
		t.Errorf("no pass attempted while the server was down: it gave up")
	}
	if degraded == 0 {
		t.Errorf("no heartbeat reported the outage")
	}
	if s.lostUp+s.lostIn > 0 {
		t.Errorf("not converged %s after the server returned: %+v", took, s)
	} else if limit := interval + interval/10 + time.Second; took > limit {
		t.Errorf("converged %.1fs after the server returned; want within one interval (%s + jitter + 1s to move the files)", took.Seconds(), interval)
	}
}
