package worker_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/project-flotta/flotta-device-worker/podman"
	yggdrasil "github.com/project-flotta/flotta-device-worker/proto"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/worker"
)

const waitFor = 5 * time.Second

type harness struct {
	w    *worker.Worker
	wl   *fakeWorkloads
	ds   *fakeDataSync
	disp *fakeDispatcher
	dir  string
}

func newHarness(t *testing.T, dir string) *harness {
	t.Helper()
	h := &harness{wl: &fakeWorkloads{}, ds: &fakeDataSync{}, disp: &fakeDispatcher{}, dir: dir}
	w, err := worker.New(worker.Options{
		DataDir:       dir,
		Dispatcher:    h.disp,
		Log:           zaptest.NewLogger(t),
		RetryInterval: 50 * time.Millisecond,
	}, h.wl, h.ds)
	require.NoError(t, err)
	require.NoError(t, w.Start(context.Background()))
	t.Cleanup(w.Stop)
	h.w = w
	return h
}

func message(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "messages", name))
	require.NoError(t, err)
	return b
}

// edit returns a copy of a JSON message changed by f.
func edit(t *testing.T, b []byte, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	f(m)
	out, err := json.Marshal(m)
	require.NoError(t, err)
	return out
}

func (h *harness) send(t *testing.T, content []byte) error {
	t.Helper()
	_, err := h.w.Send(context.Background(), &yggdrasil.Data{MessageId: time.Now().String(), Directive: "device", Content: content})
	return err
}

// heartbeats decodes every heartbeat sent so far.
func (h *harness) heartbeats(t *testing.T) []worker.Heartbeat {
	t.Helper()
	var hbs []worker.Heartbeat
	for _, d := range h.disp.messages() {
		require.Equal(t, "heartbeat", d.GetDirective())
		var hb worker.Heartbeat
		require.NoError(t, json.Unmarshal(d.GetContent(), &hb), "heartbeat content is JSON")
		hbs = append(hbs, hb)
	}
	return hbs
}

func (h *harness) waitHeartbeat(t *testing.T, cond func(worker.Heartbeat) bool) worker.Heartbeat {
	t.Helper()
	var found worker.Heartbeat
	require.Eventually(t, func() bool {
		for _, hb := range h.heartbeats(t) {
			if cond(hb) {
				found = hb
				return true
			}
		}
		return false
	}, waitFor, 10*time.Millisecond)
	return found
}

func TestGoodMessageIsPersistedAppliedAndReported(t *testing.T) {
	h := newHarness(t, t.TempDir())
	require.NoError(t, h.send(t, message(t, "os-stats.json")))

	hb := h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version == "48213" })
	assert.Equal(t, "up", hb.Status)
	require.Len(t, hb.Workloads, 1)
	assert.Equal(t, worker.WorkloadHeartbeat{Name: "os-stats", Status: "running"}, hb.Workloads[0], "no upload yet: no last_data_upload")
	require.NotEmpty(t, hb.Events)
	assert.Equal(t, "ConfigurationApplied", hb.Events[len(hb.Events)-1].Reason)

	applies := h.wl.applies()
	require.Len(t, applies, 1)
	assert.Equal(t, []podman.Workload{{
		Name: "os-stats", Namespace: "default", Labels: map[string]string{"dc": "home"},
		Specification: "containers:\n- name: stats-collector\n  image: quay.io/example/os-stats:v1\n",
	}}, applies[0])

	h.ds.mu.Lock()
	ep, ms := h.ds.endpoint, h.ds.mappings
	h.ds.mu.Unlock()
	require.NotNil(t, ep)
	assert.Equal(t, "minio.example.com", ep.Host)
	root := filepath.Join(h.dir, "volumes", "os-stats")
	assert.Equal(t, []datasync.Mapping{{
		ID: "os-stats/egress/stats", Direction: datasync.Egress, Root: root,
		LocalDir: filepath.Join(root, "stats"), Bucket: "device-bucket-6", Prefix: "statistics",
	}}, ms)

	st, err := os.Stat(filepath.Join(h.dir, worker.ConfigFileName))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
}

func TestBadMessageIsRefusedAndChangesNothing(t *testing.T) {
	h := newHarness(t, t.TempDir())
	require.NoError(t, h.send(t, message(t, "os-stats.json")))
	h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version == "48213" })
	before, err := os.ReadFile(filepath.Join(h.dir, worker.ConfigFileName))
	require.NoError(t, err)

	err = h.send(t, message(t, "bad/dotdot-egress-source.json"))
	require.Error(t, err)
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), `workloads[0].data.egress[1].source: must not contain ".."`)

	after, err := os.ReadFile(filepath.Join(h.dir, worker.ConfigFileName))
	require.NoError(t, err)
	assert.Equal(t, before, after)

	// Heartbeats are not sent on refusal; the warning rides the next one.
	require.NoError(t, h.send(t, edit(t, message(t, "os-stats.json"), func(m map[string]any) { m["version"] = "48300" })))
	hb := h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version == "48300" })
	var warned bool
	for _, e := range hb.Events {
		if e.Type == "warn" && e.Reason == "InvalidConfiguration" {
			warned = true
			assert.Contains(t, e.Message, "must not contain")
		}
	}
	assert.True(t, warned, "the refusal is reported as a warn event: %+v", hb.Events)
	assert.Len(t, h.wl.applies(), 2)
}

func TestUnknownDirectiveIsRefused(t *testing.T) {
	h := newHarness(t, t.TempDir())
	_, err := h.w.Send(context.Background(), &yggdrasil.Data{Directive: "reboot", Content: []byte("{}")})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown directive "reboot"`)
}

func TestEqualContentIsANoOp(t *testing.T) {
	h := newHarness(t, t.TempDir())
	msg := message(t, "os-stats.json")
	require.NoError(t, h.send(t, msg))
	h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version == "48213" })

	// Remove the persisted file: a no-op must not write it again.
	path := filepath.Join(h.dir, worker.ConfigFileName)
	require.NoError(t, os.Remove(path))
	reformatted := edit(t, msg, func(m map[string]any) { m["unknown_field"] = "ignored" })
	for i := 0; i < 5; i++ {
		require.NoError(t, h.send(t, msg))
		require.NoError(t, h.send(t, reformatted))
	}
	time.Sleep(100 * time.Millisecond)
	assert.Len(t, h.wl.applies(), 1, "no re-apply")
	h.ds.mu.Lock()
	assert.Equal(t, 1, h.ds.configured, "no sync restart")
	h.ds.mu.Unlock()
	assert.NoFileExists(t, path, "no disk write")
}

func TestChangeUnderSameVersionApplies(t *testing.T) {
	h := newHarness(t, t.TempDir())
	msg := message(t, "os-stats.json")
	require.NoError(t, h.send(t, msg))
	require.Eventually(t, func() bool { return len(h.wl.applies()) == 1 }, waitFor, 5*time.Millisecond)

	changed := edit(t, msg, func(m map[string]any) {
		m["workloads"].([]any)[0].(map[string]any)["labels"] = map[string]any{"dc": "office"}
	})
	require.NoError(t, h.send(t, changed))
	require.Eventually(t, func() bool { return len(h.wl.applies()) == 2 }, waitFor, 5*time.Millisecond)
	assert.Equal(t, "office", h.wl.applies()[1][0].Labels["dc"])

	withSecret := edit(t, changed, func(m map[string]any) { m["secrets"] = []any{map[string]any{"name": "s", "data": "{}"}} })
	require.NoError(t, h.send(t, withSecret))
	require.Eventually(t, func() bool { return len(h.wl.applies()) == 3 }, waitFor, 5*time.Millisecond)

	persisted, err := os.ReadFile(filepath.Join(h.dir, worker.ConfigFileName))
	require.NoError(t, err)
	assert.Contains(t, string(persisted), `"office"`)
}

func TestPersistedConfigurationIsAppliedAtStart(t *testing.T) {
	dir := t.TempDir()
	first := newHarness(t, dir)
	require.NoError(t, first.send(t, message(t, "os-stats.json")))
	require.Eventually(t, func() bool { return len(first.wl.applies()) == 1 }, waitFor, 5*time.Millisecond)
	first.w.Stop()

	second := newHarness(t, dir)
	hb := second.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version == "48213" })
	assert.Equal(t, "up", hb.Status)
	require.Len(t, second.wl.applies(), 1, "applied from disk without any message")
	assert.Equal(t, "os-stats", second.wl.applies()[0][0].Name)

	// The same message from yggd is then a no-op.
	require.NoError(t, second.send(t, message(t, "os-stats.json")))
	time.Sleep(50 * time.Millisecond)
	assert.Len(t, second.wl.applies(), 1)
}

func TestCorruptPersistedConfigurationIsReportedNotFatal(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, worker.ConfigFileName), []byte(`{"workloads":[{"name":"../x"}]}`), 0o600))
	h := newHarness(t, dir)
	require.NoError(t, h.send(t, message(t, "os-stats.json")))
	hb := h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version == "48213" })
	assert.Equal(t, "PersistedConfigurationInvalid", hb.Events[0].Reason)
}

func TestLatestConfigurationWinsWhileApplying(t *testing.T) {
	h := newHarness(t, t.TempDir())
	release := make(chan struct{})
	h.wl.mu.Lock()
	h.wl.blockNext = release
	h.wl.mu.Unlock()
	base := message(t, "os-stats.json")
	for _, v := range []string{"1", "2", "3", "4"} {
		require.NoError(t, h.send(t, edit(t, base, func(m map[string]any) { m["version"] = v })))
	}
	close(release)
	hb := h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version == "4" })
	assert.Equal(t, "up", hb.Status)
	assert.LessOrEqual(t, len(h.wl.applies()), 2, "intermediate versions are coalesced")
}

func TestFailedApplyIsRetriedAndReported(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.wl.mu.Lock()
	h.wl.failNext = 1
	h.wl.mu.Unlock()
	require.NoError(t, h.send(t, message(t, "os-stats.json")))
	hb := h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Status == "degraded" })
	assert.Equal(t, "WorkloadsApplyFailed", hb.Events[0].Reason)
	assert.Equal(t, "warn", hb.Events[0].Type)
	h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Status == "up" && hb.Version == "48213" })
	assert.Len(t, h.wl.applies(), 2)
}

func TestHeartbeatDegradedAndLastDataUpload(t *testing.T) {
	h := newHarness(t, t.TempDir())
	msg := edit(t, message(t, "os-stats.json"), func(m map[string]any) {
		w := m["workloads"].([]any)[0].(map[string]any)
		w["data"].(map[string]any)["ingress"] = []any{map[string]any{"source": "remote/in", "target": "in"}}
		m["configuration"].(map[string]any)["heartbeat"] = map[string]any{"period_seconds": 1}
	})
	older := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	newer := older.Add(time.Hour)
	h.ds.setStatus([]datasync.MappingStatus{
		{ID: "os-stats/egress/stats", Direction: datasync.Egress, LastSuccess: newer},
		{ID: "os-stats/ingress/in", Direction: datasync.Ingress, LastSuccess: older},
	})
	require.NoError(t, h.send(t, msg))
	hb := h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version == "48213" })
	require.Len(t, hb.Workloads, 1)
	assert.Equal(t, older.Format(time.RFC3339), hb.Workloads[0].LastDataUpload, "all mappings had succeeded by the earliest last success")
	assert.Len(t, hb.DataSync, 2)
	assert.Equal(t, "up", hb.Status)

	h.ds.setStatus([]datasync.MappingStatus{
		{ID: "os-stats/egress/stats", Direction: datasync.Egress, LastSuccess: newer, LastError: "access denied"},
		{ID: "os-stats/ingress/in", Direction: datasync.Ingress},
	})
	hb = h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Status == "degraded" })
	assert.Empty(t, hb.Workloads[0].LastDataUpload, "a mapping never succeeded")

	h.ds.setStatus(nil)
	h.wl.mu.Lock()
	h.wl.statuses = []podman.WorkloadStatus{{Name: "os-stats", State: podman.Crashed}}
	h.wl.mu.Unlock()
	n := len(h.heartbeats(t))
	require.Eventually(t, func() bool {
		hbs := h.heartbeats(t)
		return len(hbs) > n && hbs[len(hbs)-1].Status == "degraded" && hbs[len(hbs)-1].Workloads[0].Status == "crashed"
	}, waitFor, 10*time.Millisecond)
}

func TestEventsAreSentOnceAndKeptWhenUndelivered(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.disp.setFail(true)
	msg := edit(t, message(t, "os-stats.json"), func(m map[string]any) {
		m["configuration"].(map[string]any)["heartbeat"] = map[string]any{"period_seconds": 1}
	})
	h.wl.mu.Lock()
	h.wl.events = []podman.Event{{Reason: "Pulled", Message: "image pulled", Type: "info"}}
	h.wl.mu.Unlock()
	require.NoError(t, h.send(t, msg))
	require.Eventually(t, func() bool { return len(h.wl.applies()) == 1 }, waitFor, 5*time.Millisecond)
	time.Sleep(100 * time.Millisecond) // the heartbeat after apply fails
	h.disp.setFail(false)

	hb := h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return len(hb.Events) > 0 })
	var reasons []string
	for _, e := range hb.Events {
		reasons = append(reasons, e.Reason)
	}
	assert.ElementsMatch(t, []string{"ConfigurationApplied", "Pulled"}, reasons)
	n := len(h.heartbeats(t))
	require.Eventually(t, func() bool { return len(h.heartbeats(t)) > n }, waitFor, 10*time.Millisecond)
	hbs := h.heartbeats(t)
	assert.Empty(t, hbs[len(hbs)-1].Events, "events are drained once sent")
}

func TestDisconnectRemovesEverything(t *testing.T) {
	h := newHarness(t, t.TempDir())
	require.NoError(t, h.send(t, message(t, "os-stats.json")))
	h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version == "48213" })

	for _, ev := range []yggdrasil.Event{yggdrasil.Event_UNEXPECTED_DISCONNECT, yggdrasil.Event_CONNECTION_RESTORED} {
		_, err := h.w.NotifyEvent(context.Background(), &yggdrasil.EventNotification{Name: ev})
		require.NoError(t, err)
	}
	assert.FileExists(t, filepath.Join(h.dir, worker.ConfigFileName), "connection events change nothing")

	_, err := h.w.NotifyEvent(context.Background(), &yggdrasil.EventNotification{Name: yggdrasil.Event_RECEIVED_DISCONNECT})
	require.NoError(t, err)
	assert.NoFileExists(t, filepath.Join(h.dir, worker.ConfigFileName))
	require.Eventually(t, func() bool {
		h.wl.mu.Lock()
		defer h.wl.mu.Unlock()
		h.ds.mu.Lock()
		defer h.ds.mu.Unlock()
		return h.wl.removed == 1 && h.ds.removed == 1
	}, waitFor, 5*time.Millisecond)

	// A new configuration after unregistration starts afresh.
	require.NoError(t, h.send(t, message(t, "os-stats.json")))
	require.Eventually(t, func() bool { return len(h.wl.applies()) == 2 }, waitFor, 5*time.Millisecond)
	assert.FileExists(t, filepath.Join(h.dir, worker.ConfigFileName))
}

// withPeriod sets the heartbeat period of a JSON message.
func withPeriod(t *testing.T, b []byte, seconds int) []byte {
	return edit(t, b, func(m map[string]any) {
		cfg := m["configuration"].(map[string]any)
		cfg["heartbeat"] = map[string]any{"period_seconds": seconds}
	})
}

func TestHeartbeatNeverCarriesAnEmptyOrUnappliedVersion(t *testing.T) {
	h := newHarness(t, t.TempDir())
	release := make(chan struct{})
	h.wl.mu.Lock()
	h.wl.blockNext = release
	h.wl.mu.Unlock()
	require.NoError(t, h.send(t, withPeriod(t, message(t, "os-stats.json"), 1)))
	// The period (1 s) elapses while the first configuration is applied:
	// nothing is sent before it has been applied.
	time.Sleep(1500 * time.Millisecond)
	assert.Empty(t, h.heartbeats(t), "no heartbeat before a configuration was applied")
	close(release)
	h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version == "48213" })

	// A newer configuration reports the old version until it is applied.
	release = make(chan struct{})
	h.wl.mu.Lock()
	h.wl.blockNext = release
	h.wl.mu.Unlock()
	mark := len(h.heartbeats(t))
	require.NoError(t, h.send(t, edit(t, withPeriod(t, message(t, "os-stats.json"), 1), func(m map[string]any) { m["version"] = "48300" })))
	require.Eventually(t, func() bool { return len(h.heartbeats(t)) > mark+1 }, waitFor, 10*time.Millisecond)
	for _, hb := range h.heartbeats(t)[mark:] {
		assert.Equal(t, "48213", hb.Version, "the version being applied is not reported yet")
	}
	close(release)
	h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version == "48300" })
	for _, hb := range h.heartbeats(t) {
		assert.NotEmpty(t, hb.Version)
	}
}

func TestHeartbeatReportsThePersistedVersionBeforeItIsApplied(t *testing.T) {
	dir := t.TempDir()
	first := newHarness(t, dir)
	require.NoError(t, first.send(t, withPeriod(t, message(t, "os-stats.json"), 1)))
	first.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version == "48213" })
	first.w.Stop()

	h := &harness{wl: &fakeWorkloads{blockNext: make(chan struct{})}, ds: &fakeDataSync{}, disp: &fakeDispatcher{}, dir: dir}
	release := h.wl.blockNext
	w, err := worker.New(worker.Options{DataDir: dir, Dispatcher: h.disp, Log: zaptest.NewLogger(t)}, h.wl, h.ds)
	require.NoError(t, err)
	require.NoError(t, w.Start(context.Background()))
	t.Cleanup(w.Stop)
	t.Cleanup(func() { close(release) })
	h.w = w
	hb := h.waitHeartbeat(t, func(worker.Heartbeat) bool { return true })
	assert.Equal(t, "48213", hb.Version, "the last good configuration loaded from disk")
}
