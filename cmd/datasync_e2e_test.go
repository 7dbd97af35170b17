package e2e_test

// Issue 5 end to end: the real worker under the dev dispatcher runs a pod on
// a real podman service and synchronises its /export with a real versitygw.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/worker"
)

const (
	egressID  = "os-stats/egress/stats"
	ingressID = "os-stats/ingress/local/download/data"
)

// statsDevice starts a device and delivers version 1 with statsWorkload,
// waiting until the pod runs.
func statsDevice(t *testing.T, o deviceOptions) (*device, int) {
	t.Helper()
	o.args = append([]string{"--resend", "0"}, o.args...)
	dv := startDevice(t, o)
	dv.waitServing(t, 1)
	require.Equal(t, true, dv.send(t, dv.message("1", accessKey, secretKey, statsWorkload()))["ok"])
	_, at := dv.waitHeartbeat(t, 0, "os-stats running", func(hb worker.Heartbeat) bool {
		return hb.Version == "1" && running(hb, "os-stats")
	})
	return dv, at
}

// waitFirstEgressPass waits until the egress mapping's first pass, which
// starts as soon as it is configured, has ended: with a long interval no
// other pass follows until the final one.
func (dv *device) waitFirstEgressPass(t *testing.T, from int) {
	t.Helper()
	dv.waitHeartbeat(t, from, "the first egress pass done", func(hb worker.Heartbeat) bool {
		m, ok := mapping(hb, egressID)
		return ok && !m.LastSuccess.IsZero() && running(hb, "os-stats")
	})
}

// writeStat writes a file into the workload's stats directory from the
// host side of its volume, as the container would.
func (dv *device) writeStat(t *testing.T, name, body string) {
	t.Helper()
	dir := filepath.Join(dv.volume("os-stats"), "stats")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
}

func TestDataFlowsBothWaysAndReachesTheHeartbeat(t *testing.T) {
	dv, at := statsDevice(t, deviceOptions{})

	// Egress: what the container writes lands under statistics/.
	body := dv.waitObject(t, "statistics/s-1.txt", 30*time.Second)
	assert.Equal(t, "sample 1\n", body)

	// Ingress: an object under remote/data/ lands in the container.
	dv.putObject(t, "remote/data/config/hello.txt", "hello from the cloud\n")
	host := filepath.Join(dv.volume("os-stats"), "local", "download", "data", "config", "hello.txt")
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(host)
		return err == nil && string(b) == "hello from the cloud\n"
	}, 30*time.Second, 100*time.Millisecond, "the object never reached %s", host)
	out, err := dv.pods.Podman("exec", "os-stats-stats-collector", "cat", "/export/local/download/data/config/hello.txt")
	require.NoError(t, err)
	assert.Equal(t, "hello from the cloud\n", out, "the container reads the downloaded file in its /export")

	// The heartbeat reports both.
	hb, _ := dv.waitHeartbeat(t, at, "a heartbeat with both mappings synced", func(hb worker.Heartbeat) bool {
		e, ok1 := mapping(hb, egressID)
		i, ok2 := mapping(hb, ingressID)
		return ok1 && ok2 && e.FilesTotal > 0 && i.FilesTotal > 0 && hb.Workloads[0].LastDataUpload != ""
	})
	assert.Equal(t, "up", hb.Status)
	assert.Equal(t, worker.DataSyncOn, hb.DataSyncState)
	require.Len(t, hb.Workloads, 1)
	assert.Equal(t, "running", hb.Workloads[0].Status)
	uploaded, err := time.Parse(time.RFC3339, hb.Workloads[0].LastDataUpload)
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now(), uploaded, time.Minute)
	for _, id := range []string{egressID, ingressID} {
		m, _ := mapping(hb, id)
		assert.Empty(t, m.LastError, id)
		assert.Equal(t, bucket, m.Bucket, id)
		assert.False(t, m.LastSuccess.IsZero(), id)
	}
	e, _ := mapping(hb, egressID)
	assert.Equal(t, "statistics", e.Prefix)
	i, _ := mapping(hb, ingressID)
	assert.Equal(t, "remote/data", i.Prefix)
	for _, m := range hb.DataSync {
		switch m.ID {
		case egressID:
			assert.Equal(t, []string{"os-stats", "stats", "statistics"}, []string{m.Workload, m.Source, m.Target})
		case ingressID:
			assert.Equal(t, []string{"os-stats", "remote/data", "local/download/data"}, []string{m.Workload, m.Source, m.Target})
		}
	}
	assert.Equal(t, int64(1), i.FilesTotal, "one object downloaded")

	// The container keeps writing and the samples keep going up.
	keys := dv.objects(t, "statistics/")
	require.Eventually(t, func() bool { return len(dv.objects(t, "statistics/")) > len(keys) }, 30*time.Second, 200*time.Millisecond)

	dv.assertNoSecrets(t, accessKey, secretKey)
}

func TestRemovedWorkloadGetsAFinalUpload(t *testing.T) {
	// An hour between passes: after the prompt first pass, only the final
	// pass can upload anything.
	dv, at := statsDevice(t, deviceOptions{syncInterval: "1h"})
	dv.waitFirstEgressPass(t, at)

	dv.writeStat(t, "last-words.txt", "written right before the removal\n")
	mark := dv.count()
	require.Equal(t, true, dv.send(t, dv.message("2", accessKey, secretKey))["ok"])
	hb, _ := dv.waitHeartbeat(t, mark, "version 2 without workloads", func(hb worker.Heartbeat) bool { return hb.Version == "2" })
	assert.Empty(t, hb.Workloads)
	assert.Empty(t, hb.DataSync, "the removed workload's mappings are gone")
	_, failed := event(hb, "FinalSyncFailed")
	assert.False(t, failed, "%+v", hb.Events)
	assert.False(t, dv.podExists("os-stats"), "the pod is removed")

	assert.Equal(t, "written right before the removal\n", dv.waitObject(t, "statistics/last-words.txt", time.Second))
	keys := dv.objects(t, "statistics/")
	assert.Contains(t, keys, "statistics/s-1.txt", "what the container wrote went up too")
	// Every sample the container wrote before its pod stopped is in the bucket.
	entries, err := os.ReadDir(filepath.Join(dv.volume("os-stats"), "stats"))
	require.NoError(t, err)
	for _, e := range entries {
		assert.Contains(t, keys, "statistics/"+e.Name())
	}
	dv.assertNoSecrets(t, accessKey, secretKey)
}

func TestShutdownUploadsTheLastWrites(t *testing.T) {
	dv, at := statsDevice(t, deviceOptions{syncInterval: "1h"})
	dv.waitFirstEgressPass(t, at)

	dv.writeStat(t, "before-sigterm.txt", "written right before SIGTERM\n")
	mark := dv.count()
	dv.command(t, "quit") // the dispatcher forwards SIGTERM
	r, _ := dv.waitFrom(t, mark, "worker exit", isKind("worker-exit"))
	assert.Empty(t, r.str("error"), "the worker exits cleanly on SIGTERM, before the dispatcher's SIGKILL")
	assert.Equal(t, "written right before SIGTERM\n", dv.waitObject(t, "statistics/before-sigterm.txt", time.Second))
	assert.True(t, dv.podExists("os-stats"), "stopping the worker is not unregistering: the pod keeps running")
	dv.assertNoSecrets(t, accessKey, secretKey)
}

func TestRotatedCredentialsTakeEffectWithoutRestart(t *testing.T) {
	dv, at := statsDevice(t, deviceOptions{})
	dv.waitHeartbeat(t, at, "egress synced", func(hb worker.Heartbeat) bool {
		m, ok := mapping(hb, egressID)
		return ok && m.FilesTotal > 0 && m.LastError == ""
	})

	// The server's keys change: the worker's old keys are refused.
	const access2, secret2 = "flottaAK2r", "flottaSKr0t4t3dQw9Zx7"
	mark := dv.count()
	dv.s3.Rotate(access2, secret2)
	hb, _ := dv.waitHeartbeat(t, mark, "degraded with the old keys", func(hb worker.Heartbeat) bool {
		_, ok := event(hb, "DataSyncFailed")
		return ok
	})
	assert.Equal(t, "degraded", hb.Status)
	msg, _ := event(hb, "DataSyncFailed")
	t.Logf("with the old keys: %s", msg)
	assert.Contains(t, strings.ToLower(msg), "access key", "the event says what is wrong: %s", msg)

	// The control plane delivers the new keys: sync continues.
	mark = dv.count()
	require.Equal(t, true, dv.send(t, dv.message("2", access2, secret2, statsWorkload()))["ok"])
	hb, _ = dv.waitHeartbeat(t, mark, "recovered with the new keys", func(hb worker.Heartbeat) bool {
		_, ok := event(hb, "DataSyncRecovered")
		return ok && hb.Status == "up"
	})
	assert.Equal(t, "2", hb.Version)
	dv.writeStat(t, "after-rotation.txt", "after\n")
	assert.Equal(t, "after\n", dv.waitObject(t, "statistics/after-rotation.txt", 30*time.Second))
	dv.putObject(t, "remote/data/after-rotation.txt", "down\n")
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(filepath.Join(dv.volume("os-stats"), "local", "download", "data", "after-rotation.txt"))
		return err == nil && string(b) == "down\n"
	}, 30*time.Second, 100*time.Millisecond, "ingress continues with the new keys")

	assert.Len(t, dv.pids(), 1, "the worker was not restarted")
	for _, r := range dv.since(0) {
		assert.NotEqual(t, "worker-exit", r.str("kind"), "the worker was not restarted")
	}
	dv.assertNoSecrets(t, accessKey, secretKey, access2, secret2)
}

func TestWrongSecretDegradesAndRecovers(t *testing.T) {
	dv, at := statsDevice(t, deviceOptions{})
	dv.waitHeartbeat(t, at, "both mappings synced", func(hb worker.Heartbeat) bool {
		e, ok1 := mapping(hb, egressID)
		i, ok2 := mapping(hb, ingressID)
		return ok1 && ok2 && e.FilesTotal > 0 && !i.LastSuccess.IsZero() && hb.Status == "up"
	})

	const wrong = "flottaSKwr0ngS3cr3tXy"
	mark := dv.count()
	require.Equal(t, true, dv.send(t, dv.message("2", accessKey, wrong, statsWorkload()))["ok"])
	hb, _ := dv.waitHeartbeat(t, mark, "degraded with a warn event", func(hb worker.Heartbeat) bool {
		_, ok := event(hb, "DataSyncFailed")
		return ok
	})
	assert.Equal(t, "degraded", hb.Status)
	for _, e := range hb.Events {
		if e.Reason == "DataSyncFailed" {
			t.Logf("with a wrong secret: %s", e.Message)
			assert.Equal(t, "warn", e.Type)
			assert.Contains(t, strings.ToLower(e.Message), "signature", "the event says what is wrong: %s", e.Message)
		}
	}
	assert.True(t, running(hb, "os-stats"), "a storage problem does not touch the workload")

	mark = dv.count()
	require.Equal(t, true, dv.send(t, dv.message("3", accessKey, secretKey, statsWorkload()))["ok"])
	hb, _ = dv.waitHeartbeat(t, mark, "recovered", func(hb worker.Heartbeat) bool {
		_, ok := event(hb, "DataSyncRecovered")
		return ok
	})
	hb, _ = dv.waitHeartbeat(t, mark, "up again with no mapping error", func(hb worker.Heartbeat) bool {
		e, _ := mapping(hb, egressID)
		i, _ := mapping(hb, ingressID)
		return hb.Status == "up" && e.LastError == "" && i.LastError == ""
	})
	assert.Equal(t, "3", hb.Version)
	dv.writeStat(t, "after-fix.txt", "fixed\n")
	assert.Equal(t, "fixed\n", dv.waitObject(t, "statistics/after-fix.txt", 30*time.Second))
	assert.Len(t, dv.pids(), 1, "the worker was not restarted")
	dv.assertNoSecrets(t, accessKey, secretKey, wrong)
}
