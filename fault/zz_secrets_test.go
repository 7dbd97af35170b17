package fault_test

// This file sorts last so its test runs after the others and can report the
// suite's totals: every devdispatcher run and every flotta-sync run of the
// suite is scanned for the credentials when it ends.

import (
	"encoding/base64"
	"path/filepath"
	"testing"
	"time"
)

// TestNoSecretsInLogsOrHeartbeats runs the worker at DEBUG through the
// paths most likely to print credentials — normal sync, the server going
// away, credentials the server refuses, a refused message carrying keys —
// plus flotta-sync -v with refused credentials, and greps every log line and
// heartbeat for the access and secret keys, raw and base64.
func TestNoSecretsInLogsOrHeartbeats(t *testing.T) {
	srv := startS3(t)
	r := newWorkerRig(t, srv, filepath.Join(t.TempDir(), "data"), "FLOTTA_SYNC_INTERVAL=1s")
	for i := range 5 {
		r.writeLocal("f"+string(rune('a'+i)), 4<<10)
		r.putRemote("o"+string(rune('a'+i)), 4<<10)
	}
	r.msg = writeJSON(t, r.msg, message(srv, "s-1", accessKey, secretKey, []dataPath{{"out", "up"}}, []dataPath{{"down", "in"}}))
	d := r.start("--poll", "100ms")
	if s, _ := r.converge(30 * time.Second); s.lostUp+s.lostIn > 0 {
		t.Fatalf("no convergence: %+v", s)
	}
	// The server goes away for a moment.
	srv.Stop()
	time.Sleep(2500 * time.Millisecond)
	srv.Restart()
	// Credentials the server refuses.
	from := d.count()
	writeJSON(t, r.msg, message(srv, "s-2", wrongAccess, wrongSecret, []dataPath{{"out", "up"}}, []dataPath{{"down", "in"}}))
	d.wait("a heartbeat reporting refused credentials", from, 30*time.Second, func(rec record) bool {
		hb, err := rec.heartbeat()
		if !rec.isHeartbeat() || err != nil || hb.Version != "s-2" {
			return false
		}
		for _, m := range hb.DataSync {
			if m.LastError != "" {
				return true
			}
		}
		return false
	})
	// A refused message that carries keys.
	bad := message(srv, "s-3", accessKey, secretKey, []dataPath{{"out", "up"}}, nil)
	bad["configuration"].(map[string]any)["storage"].(map[string]any)["s3"].(map[string]any)["bucket_host"] = "ftp://" + srv.Host
	badPath := writeJSON(t, filepath.Join(t.TempDir(), "bad.json"), bad)
	from = d.count()
	d.command("send " + badPath)
	d.wait("the refusal", from, 10*time.Second, func(rec record) bool { return rec.str("kind") == "deliver" && rec.str("file") == badPath })
	time.Sleep(1500 * time.Millisecond) // a heartbeat with the refusal event
	d.stop()
	lines, heartbeats := len(splitLines(d.stderr.Bytes())), len(d.heartbeats(0))

	// flotta-sync with refused credentials, verbose.
	cli := startCLI(t, srv, "push", r.out, "s3://"+bucket+"/cli", "--state", t.TempDir())
	<-cli.exited
	if cli.err != nil {
		t.Fatalf("flotta-sync push with good credentials: %v\n%s", cli.err, cli.out.Bytes())
	}
	wrong := startCLIWith(t, srv, wrongAccess, wrongSecret, "push", r.out, "s3://"+bucket+"/cli2", "--state", t.TempDir())
	<-wrong.exited
	if wrong.err == nil {
		t.Fatalf("flotta-sync push with refused credentials succeeded:\n%s", wrong.out.Bytes())
	}
	cliLines, _ := scanSecrets(t, "flotta-sync output", append(cli.out.Bytes(), wrong.out.Bytes()...))

	// The scan can fail: a planted key, raw or base64, is found.
	planted := []byte("ok line\n{\"msg\":\"x\",\"key\":\"" + base64.StdEncoding.EncodeToString([]byte(secretKey)) + "\"}\nauth " + accessKey + "\n")
	if _, leaks := secretLines(planted); len(leaks) != 2 {
		t.Errorf("the scan found %d of 2 planted keys", len(leaks))
	}

	secretScan.mu.Lock()
	total, hits := secretScan.lines, len(secretScan.hits)
	secretScan.mu.Unlock()
	summary(t, "secrets: %d worker log lines and %d heartbeats of this run, %d flotta-sync lines, %d lines in the whole suite: %d contain a key (%d forms searched: 2 access and 2 secret keys, raw and base64)",
		lines, heartbeats, cliLines, total, hits, len(secretForms()))
	if wrong.err == nil {
		t.Errorf("flotta-sync succeeded with refused credentials")
	}
	if lines == 0 || heartbeats == 0 {
		t.Errorf("nothing scanned")
	}
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != '\n' {
			i++
		}
		if i > 0 {
			out = append(out, b[:i])
		}
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	return out
}
