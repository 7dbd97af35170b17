package e2e_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/podman/podmantest"
	"github.com/project-flotta/flotta-device-worker/sync/s3test"
	"github.com/project-flotta/flotta-device-worker/worker"
)

// Distinctive credentials, so that finding them in logs or heartbeats can
// only mean a leak ("minioadmin" appears in other contexts).
const (
	accessKey = "flottaAK7q"
	secretKey = "flottaSKz9Lp2Wq8Xv4Nm6"
	bucket    = "device-bucket-e2e"
)

// device is one worker under the dev dispatcher with its own real podman
// service and its own versitygw.
type device struct {
	*devDispatcher
	pods *podmantest.Service
	s3   *s3test.Server
	opts deviceOptions
}

// deviceOptions change how startDevice runs the worker.
type deviceOptions struct {
	syncInterval string   // FLOTTA_SYNC_INTERVAL; default 1s
	access       string   // the server's root credentials; default accessKey/secretKey
	secret       string   //
	args         []string // extra devdispatcher arguments
}

// startDevice starts a podman service, a versitygw with the test bucket, and
// the dev dispatcher running the real worker against both.
func startDevice(t *testing.T, o deviceOptions) *device {
	t.Helper()
	dv := newDevice(t, o)
	dv.start(t)
	return dv
}

// newDevice starts the podman service and the versitygw; start starts the
// dispatcher.
func newDevice(t *testing.T, o deviceOptions) *device {
	t.Helper()
	if o.syncInterval == "" {
		o.syncInterval = "1s"
	}
	if o.access == "" {
		o.access, o.secret = accessKey, secretKey
	}
	dv := &device{pods: podmantest.Start(t)}
	dv.s3 = s3test.Start(t, s3test.WithCredentials(o.access, o.secret), s3test.WithBuckets(bucket))
	dv.opts = o
	return dv
}

// start runs the dev dispatcher, with the options' and these extra
// arguments, on the device's services.
func (dv *device) start(t *testing.T, extra ...string) {
	t.Helper()
	args := append([]string{
		"--env", "FLOTTA_PODMAN_SOCKET=" + dv.pods.URI,
		"--env", "FLOTTA_SYNC_INTERVAL=" + dv.opts.syncInterval,
		"--env", "FLOTTA_MIN_FREE=-1", // the test machine's disk is not the subject
		"--env", "FLOTTA_SHUTDOWN_SYNC_TIMEOUT=5s", // under the dispatcher's 10 s SIGKILL
	}, dv.opts.args...)
	dv.devDispatcher = startDispatcher(t, append(args, extra...)...)
}

// workload is a configuration message's workload.
type workload = map[string]any

// sleeperWorkload is the seed's os-stats workload on the local image: a
// container that only waits, and egress stats → statistics.
func sleeperWorkload() workload {
	return workload{
		"name": "os-stats", "namespace": "default", "labels": map[string]any{"dc": "home"},
		"specification": "containers:\n- name: stats-collector\n  image: " + podmantest.Image + "\n  imagePullPolicy: Never\n" +
			"  command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 3600 & wait\"]\n",
		"data": map[string]any{"egress": []any{map[string]any{"source": "stats", "target": "statistics"}}},
	}
}

// statsWorkload is issue 5's workload: its container writes a sample into
// /export/stats every second and reads nothing; egress stats → statistics,
// ingress remote/data → local/download/data.
func statsWorkload() workload {
	return workload{
		"name": "os-stats", "namespace": "default",
		"specification": "containers:\n- name: stats-collector\n  image: " + podmantest.Image + "\n  imagePullPolicy: Never\n" +
			"  command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; mkdir -p /export/stats; i=0; while true; do i=$((i+1)); echo sample $i > /export/stats/s-$i.txt; sleep 1; done\"]\n",
		"data": map[string]any{
			"egress":  []any{map[string]any{"source": "stats", "target": "statistics"}},
			"ingress": []any{map[string]any{"source": "remote/data", "target": "local/download/data"}},
		},
	}
}

// message is a configuration message with a 1 s heartbeat, 1 s workload
// monitoring, and storage on the device's versitygw with the given keys.
func (dv *device) message(version, access, secret string, ws ...workload) map[string]any {
	return map[string]any{
		"device_id": "dev-device", "version": version, "workloads_monitoring_interval": 1,
		"configuration": map[string]any{
			"heartbeat": map[string]any{"period_seconds": 1},
			"storage": map[string]any{"s3": map[string]any{
				"bucket_host": "http://" + dv.s3.Host, "bucket_port": dv.s3.Port,
				"bucket_name": bucket, "bucket_region": s3test.Region,
				"aws_access_key_id":     base64.StdEncoding.EncodeToString([]byte(access)),
				"aws_secret_access_key": base64.StdEncoding.EncodeToString([]byte(secret)),
			}},
		},
		"workloads": append([]any{}, anySlice(ws)...),
		"secrets":   []any{},
	}
}

func anySlice(ws []workload) []any {
	out := make([]any, len(ws))
	for i, w := range ws {
		out[i] = w
	}
	return out
}

// writeJSON writes m to a new file and returns its path.
func writeJSON(t *testing.T, m map[string]any) string {
	t.Helper()
	b, err := json.Marshal(m)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "message.json")
	require.NoError(t, os.WriteFile(path, b, 0o600))
	return path
}

// waitServing waits until the worker said, n times since the dispatcher
// started, that it serves yggd's Worker service. The dispatcher records the
// registration before the worker listens on its address, and a message
// delivered in between is lost (as with yggd, whose resend would deliver it).
func (d *devDispatcher) waitServing(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		d.mu.Lock()
		got := strings.Count(d.stderr.String(), `"msg":"registered with yggd; serving"`)
		d.mu.Unlock()
		if got >= n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the worker never said it serves (%d times)", n)
}

// send delivers m through the dispatcher's stdin and waits for its
// delivery record, which it returns.
func (dv *device) send(t *testing.T, m map[string]any) record {
	t.Helper()
	mark := dv.count()
	dv.command(t, "send "+writeJSON(t, m))
	r, _ := dv.waitFrom(t, mark, "delivery", isKind("deliver"))
	require.Equal(t, true, r["ok"], "delivery failed: %v", r)
	return r
}

// volume is the host side of workload name's /export.
func (dv *device) volume(name string) string {
	return filepath.Join(worker.VolumesDirOf(dv.dataDir), name)
}

// heartbeats waits from position from for a heartbeat that satisfies ok.
func (dv *device) waitHeartbeat(t *testing.T, from int, what string, ok func(worker.Heartbeat) bool) (worker.Heartbeat, int) {
	t.Helper()
	r, at := dv.waitFrom(t, from, what, func(r record) bool {
		return r.str("kind") == "send" && r.str("directive") == worker.HeartbeatDirective && ok(r.heartbeat(t))
	})
	return r.heartbeat(t), at
}

// running reports whether the heartbeat lists workload name as running.
func running(hb worker.Heartbeat, name string) bool {
	for _, w := range hb.Workloads {
		if w.Name == name && w.Status == "running" {
			return true
		}
	}
	return false
}

func mapping(hb worker.Heartbeat, id string) (worker.DataSyncHeartbeat, bool) {
	i := slices.IndexFunc(hb.DataSync, func(m worker.DataSyncHeartbeat) bool { return m.ID == id })
	if i < 0 {
		return worker.DataSyncHeartbeat{}, false
	}
	return hb.DataSync[i], true
}

func event(hb worker.Heartbeat, reason string) (string, bool) {
	for _, e := range hb.Events {
		if e.Reason == reason {
			return e.Message, true
		}
	}
	return "", false
}

// objects lists the bucket's keys under prefix with the server's current
// root credentials.
func (dv *device) objects(t *testing.T, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var keys []string
	for o := range dv.s3.Client().ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		require.NoError(t, o.Err)
		keys = append(keys, o.Key)
	}
	return keys
}

// object reads one object, or returns an error.
func (dv *device) object(key string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o, err := dv.s3.Client().GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return "", err
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	return string(b), err
}

// waitObject waits until key is in the bucket and returns its content.
func (dv *device) waitObject(t *testing.T, key string, within time.Duration) string {
	t.Helper()
	var body string
	var err error
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if body, err = dv.object(key); err == nil {
			return body
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("object %s never appeared in bucket %s: %v (statistics/: %v)", key, bucket, err, dv.objects(t, "statistics/"))
	return ""
}

func (dv *device) putObject(t *testing.T, key, body string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := dv.s3.Client().PutObject(ctx, bucket, key, strings.NewReader(body), int64(len(body)), minio.PutObjectOptions{})
	require.NoError(t, err)
}

// podExists asks the podman service whether pod name exists.
func (dv *device) podExists(name string) bool {
	_, err := dv.pods.Podman("pod", "exists", name)
	return err == nil
}

// podID is the id of pod name.
func (dv *device) podID(t *testing.T, name string) string {
	t.Helper()
	out, err := dv.pods.Podman("pod", "inspect", "--format", "{{.ID}}", name)
	require.NoError(t, err)
	return strings.TrimSpace(out)
}

// pids are the worker processes the dispatcher registered.
func (dv *device) pids() []int {
	var pids []int
	for _, r := range dv.since(0) {
		if r.str("kind") == "register" && r["registered"] == true {
			pids = append(pids, int(r["pid"].(float64)))
		}
	}
	return pids
}

// assertNoSecrets checks that none of the secrets, raw or base64, is in the
// worker's logs or in any record the dispatcher printed (heartbeats).
func (dv *device) assertNoSecrets(t *testing.T, secrets ...string) {
	t.Helper()
	dv.mu.Lock()
	logs := dv.stderr.String()
	var recs bytes.Buffer
	for _, r := range dv.records {
		b, _ := json.Marshal(r)
		recs.Write(b)
		recs.WriteByte('\n')
	}
	dv.mu.Unlock()
	require.NotEmpty(t, logs)
	for _, s := range secrets {
		for _, form := range []string{s, base64.StdEncoding.EncodeToString([]byte(s))} {
			if strings.Contains(logs, form) {
				t.Errorf("secret %q found in the worker's logs", form)
			}
			if strings.Contains(recs.String(), form) {
				t.Errorf("secret %q found in the dispatcher's records (heartbeats)", form)
			}
		}
	}
}
