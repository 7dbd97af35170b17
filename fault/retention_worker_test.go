package fault_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/project-flotta/flotta-device-worker/worker"
)

// TestWorkerRetention runs the worker with a workload annotated as
// flotta-operator delivers podman/data-sync.flotta.io/... annotations: one
// egress path removes each file once its upload is confirmed, another keeps
// 100 KiB of uploaded files. Against versitygw, the objects hold every
// file, the removed files are gone, and the heartbeat reports what was kept
// and removed per path.
func TestWorkerRetention(t *testing.T) {
	srv := startS3(t)
	client := srv.Client()
	dataDir := filepath.Join(t.TempDir(), "data")
	msg := message(srv, "1", accessKey, secretKey, []dataPath{{"move", "mv"}, {"keep", "kp"}}, nil)
	wl := msg["workloads"].([]any)[0].(map[string]any)
	wl["annotations"] = map[string]any{
		"data-sync.flotta.io/remove-after-upload": "move=true",
		"data-sync.flotta.io/keep-size":           "keep=100KiB",
		"data-sync.flotta.io/upload-order":        "newest-first",
	}
	msgFile := writeJSON(t, filepath.Join(t.TempDir(), "msg.json"), msg)

	vol := filepath.Join(dataDir, "volumes", "w")
	want := map[string][]byte{}
	base := time.Now().Add(-time.Hour)
	for i := range 10 {
		for _, dir := range []string{"move", "keep"} {
			rel := fmt.Sprintf("%s/f%02d", dir, i)
			b := bytes.Repeat([]byte{byte('a' + i)}, 30<<10)
			p := filepath.Join(vol, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			mt := base.Add(time.Duration(i) * time.Minute)
			if err := os.Chtimes(p, mt, mt); err != nil {
				t.Fatal(err)
			}
			want[rel] = b
		}
	}
	d := startDispatcher(t, dataDir, msgFile, []string{"FLOTTA_PODMAN_SOCKET=" + deadPodman, "FLOTTA_MIN_FREE=-1"})

	var mv, kp worker.DataSyncHeartbeat
	deadline := time.Now().Add(60 * time.Second)
	for {
		for _, hb := range d.heartbeats(0) {
			for _, m := range hb.DataSync {
				switch m.ID {
				case "w/egress/move":
					mv = m
				case "w/egress/keep":
					kp = m
				}
			}
		}
		if mv.RemovedFiles == 10 && kp.RemovedFiles == 7 && kp.KeptFiles == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("heartbeats never showed the removals: move %+v keep %+v", mv, kp)
		}
		time.Sleep(200 * time.Millisecond)
	}

	objs, err := s3Objects(t, client, "")
	if err != nil {
		t.Fatal(err)
	}
	for rel, b := range want {
		key := "mv/" + rel[len("move/"):]
		if rel[:4] == "keep" {
			key = "kp/" + rel[len("keep/"):]
		}
		if !bytes.Equal(objs[key], b) {
			t.Errorf("%s: object %s missing or different", rel, key)
		}
	}
	files, _, err := localFiles(vol)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for rel := range files {
		left = append(left, rel)
	}
	for i := range 10 {
		_, kept := files[fmt.Sprintf("keep/f%02d", i)]
		if kept != (i >= 7) {
			t.Errorf("keep/f%02d kept %v: the three newest stay, the oldest go", i, kept)
		}
		if _, ok := files[fmt.Sprintf("move/f%02d", i)]; ok {
			t.Errorf("move/f%02d still there after its confirmed upload", i)
		}
	}
	if kp.KeptBytes != 3*30<<10 || kp.LocalBytes != 3*30<<10 || mv.RemovedBytes != 10*30<<10 || mv.KeptBytes != 0 {
		t.Errorf("heartbeat: keep kept %d local %d, move removed %d kept %d", kp.KeptBytes, kp.LocalBytes, mv.RemovedBytes, mv.KeptBytes)
	}
	summary(t, "worker retention: move path %d removed (%d bytes), keep path %d removed, %d kept (%d bytes, bound 100 KiB); %d objects, files left %v",
		mv.RemovedFiles, mv.RemovedBytes, kp.RemovedFiles, kp.KeptFiles, kp.KeptBytes, len(objs), left)
}
