package fault_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/project-flotta/flotta-device-worker/worker"
)

// TestBadMessagesKeepTheLastGoodConfiguration delivers a good message, then
// every refused message of testdata/messages/bad to the real worker: each must
// be refused with InvalidArgument, config.json must stay byte for byte (and
// untouched), and the heartbeats must keep the good version.
func TestBadMessagesKeepTheLastGoodConfiguration(t *testing.T) {
	srv := startS3(t)
	bad, err := filepath.Glob("../testdata/messages/bad/*.json")
	if err != nil || len(bad) == 0 {
		t.Fatalf("no bad messages in testdata/messages/bad: %v", err)
	}
	r := newWorkerRig(t, srv, filepath.Join(t.TempDir(), "data"))
	r.msg = writeJSON(t, filepath.Join(t.TempDir(), "good.json"),
		message(srv, "good-1", accessKey, secretKey, []dataPath{{"out", "up"}}, nil))
	d := r.start()
	d.wait("heartbeat of good-1", 0, 30*time.Second, func(rec record) bool {
		hb, err := rec.heartbeat()
		return rec.isHeartbeat() && err == nil && hb.Version == "good-1"
	})
	cfgPath := filepath.Join(r.dataDir, worker.ConfigFileName)
	good, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	st0, _ := os.Stat(cfgPath)

	refused, unchanged, versionKept, warned := 0, 0, 0, 0
	for _, file := range bad {
		abs, _ := filepath.Abs(file)
		from := d.count()
		d.command("send " + abs)
		rec, at := d.wait("delivery of "+file, from, 10*time.Second, func(rec record) bool {
			return rec.str("kind") == "deliver" && rec.str("file") == abs
		})
		if rec["ok"] == false && rec.str("code") == "InvalidArgument" {
			refused++
		} else {
			t.Errorf("%s: delivered %v (code %q, error %q), want InvalidArgument", filepath.Base(file), rec["ok"], rec.str("code"), rec.str("error"))
		}
		// The next heartbeat still carries the good version.
		hbRec, _ := d.wait("heartbeat after "+file, at+1, 10*time.Second, kind("send"))
		hb, _ := hbRec.heartbeat()
		if hb.Version == "good-1" {
			versionKept++
		} else {
			t.Errorf("%s: heartbeat version %q after a refused message", filepath.Base(file), hb.Version)
		}
		for _, e := range hb.Events {
			if e.Reason == "InvalidConfiguration" && e.Type == "warn" {
				warned++
				break
			}
		}
		now, err := os.ReadFile(cfgPath)
		st, _ := os.Stat(cfgPath)
		if err == nil && bytes.Equal(now, good) && st.ModTime().Equal(st0.ModTime()) {
			unchanged++
		} else {
			t.Errorf("%s: config.json changed after a refused message", filepath.Base(file))
		}
	}
	summary(t, "config: %d bad messages, %d refused with InvalidArgument, config.json unchanged %d/%d, heartbeat version kept %d/%d, %d warn events",
		len(bad), refused, unchanged, len(bad), versionKept, len(bad), warned)
	if warned < len(bad) {
		// Events may be merged into one heartbeat; each refusal must be reported at least once overall.
		n := 0
		for _, hb := range d.heartbeats(0) {
			for _, e := range hb.Events {
				if e.Reason == "InvalidConfiguration" {
					n++
				}
			}
		}
		if n < len(bad) {
			t.Errorf("%d InvalidConfiguration events for %d refused messages", n, len(bad))
		}
	}
}
