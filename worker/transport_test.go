package worker_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/worker"
)

func TestSocketPath(t *testing.T) {
	good := map[string]string{
		"unix:@yggd-dispatcher-abc": "@yggd-dispatcher-abc",
		"@ygg-device-xyz":           "@ygg-device-xyz",
		"unix:/run/ygg.sock":        "/run/ygg.sock",
		"unix:///run/ygg.sock":      "/run/ygg.sock",
		"/run/ygg.sock":             "/run/ygg.sock",
	}
	for in, want := range good {
		got, err := worker.SocketPath(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "unix:", "unix:@", "tcp://127.0.0.1:1", "relative.sock"} {
		_, err := worker.SocketPath(bad)
		assert.Error(t, err, bad)
	}
}
