package e2e_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/project-flotta/flotta-device-worker/worker"
)

// TestMissingPodmanSocketIsReportedInTheHeartbeat runs the real worker with
// FLOTTA_PODMAN_SOCKET naming a socket that does not exist, as on a device
// where podman.socket is not started: the worker keeps running and its
// heartbeat says what is wrong, per workload and as a warn event.
func TestMissingPodmanSocketIsReportedInTheHeartbeat(t *testing.T) {
	socket := "unix://" + filepath.Join(t.TempDir(), "podman.sock")
	d := startDispatcher(t, "--env", "FLOTTA_PODMAN_SOCKET="+socket, "--resend", "0")
	dv := &device{devDispatcher: d}
	dv.waitServing(t, 1)
	msg := map[string]any{
		"device_id": "dev-device", "version": "3", "workloads_monitoring_interval": 1,
		"configuration": map[string]any{"heartbeat": map[string]any{"period_seconds": 1}},
		"workloads": []any{map[string]any{"name": "web",
			"specification": "containers:\n- name: app\n  image: localhost/busybox:v1\n"}},
		"secrets": []any{},
	}
	dv.send(t, msg)
	want := "connect to podman at " + socket + ": no such socket: is podman.socket started?"
	hb, at := dv.waitHeartbeat(t, 0, "the workload's podman error", func(hb worker.Heartbeat) bool {
		return hb.Version == "3" && len(hb.Workloads) == 1 && strings.Contains(hb.Workloads[0].Message, want)
	})
	assert.Equal(t, "degraded", hb.Status)
	assert.Equal(t, "web", hb.Workloads[0].Name)
	assert.Equal(t, "deploying", hb.Workloads[0].Status, "nothing ran, nothing crashed: it waits for podman")
	// The warn event comes once, in this heartbeat or an earlier one.
	var warned bool
	for _, r := range dv.since(0)[:at+1] {
		if r.str("kind") != "send" || r.str("directive") != worker.HeartbeatDirective {
			continue
		}
		for _, e := range r.heartbeat(t).Events {
			warned = warned || (e.Type == "warn" && e.Reason == "WorkloadFailed" && strings.Contains(e.Message, want))
		}
	}
	assert.True(t, warned, "a WorkloadFailed warn event carries the error")
	// The worker keeps running and keeps reporting; it was never restarted.
	dv.waitHeartbeat(t, at+1, "a later heartbeat with the same error", func(hb worker.Heartbeat) bool {
		return len(hb.Workloads) == 1 && strings.Contains(hb.Workloads[0].Message, want)
	})
	for _, r := range dv.since(0) {
		assert.NotEqual(t, "worker-exit", r.str("kind"), "the worker never exits for a missing podman socket")
	}
}
