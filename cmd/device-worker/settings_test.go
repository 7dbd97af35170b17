package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestSettingsFromEnvironmentAndFlags(t *testing.T) {
	env := envOf(map[string]string{
		"YGG_SOCKET_ADDR": "unix:@yggd-dispatcher-x", "YGG_CLIENT_ID": "dev1", "YGG_LOG_LEVEL": "DEBUG",
		"FLOTTA_DATA_DIR": "/tmp/d", "FLOTTA_SYNC_INTERVAL": "2s",
	})
	s, err := parseSettings(nil, env)
	require.NoError(t, err)
	assert.Equal(t, settings{socketAddr: "unix:@yggd-dispatcher-x", clientID: "dev1", logLevel: "DEBUG",
		dataDir: "/tmp/d", podmanSocket: defaultPodmanSocket, syncInterval: 2 * time.Second, shutdownSync: defaultShutdownSync,
		rescanInterval: defaultRescanInterval, reconcileInterval: time.Hour, pollMax: defaultPollMax}, s)

	s, err = parseSettings(nil, envOf(map[string]string{"YGG_SOCKET_ADDR": "unix:@x", "FLOTTA_SYNC_CONCURRENCY": "4",
		"FLOTTA_INGRESS_QUOTA": "1048576", "FLOTTA_MIN_FREE": "-1", "FLOTTA_SHUTDOWN_SYNC_TIMEOUT": "0",
		"FLOTTA_RESCAN_INTERVAL": "10m", "FLOTTA_RECONCILE_INTERVAL": "0", "FLOTTA_WATCH": "off"}))
	require.NoError(t, err)
	assert.True(t, s.noWatch)
	assert.Equal(t, 4, s.syncConcurrency)
	assert.Equal(t, int64(1<<20), s.ingressQuota)
	assert.Equal(t, int64(-1), s.minFreeBytes)
	assert.Zero(t, s.shutdownSync)
	assert.Equal(t, 10*time.Minute, s.rescanInterval)
	assert.Zero(t, s.reconcileInterval)

	s, err = parseSettings([]string{"--data-dir", "/other", "--sync-interval", "1m"}, env)
	require.NoError(t, err)
	assert.Equal(t, "/other", s.dataDir, "a flag wins over the environment")
	assert.Equal(t, time.Minute, s.syncInterval)
}

func TestSettingsErrors(t *testing.T) {
	_, err := parseSettings(nil, envOf(nil))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "YGG_SOCKET_ADDR is not set")

	_, err = parseSettings(nil, envOf(map[string]string{"YGG_SOCKET_ADDR": "unix:@x", "FLOTTA_SYNC_INTERVAL": "soon"}))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "sync interval")

	for name, value := range map[string]string{"FLOTTA_SYNC_CONCURRENCY": "many", "FLOTTA_MIN_FREE": "1Q", "FLOTTA_INGRESS_QUOTA": "-2", "FLOTTA_SHUTDOWN_SYNC_TIMEOUT": "later",
		"FLOTTA_RESCAN_INTERVAL": "0", "FLOTTA_RECONCILE_INTERVAL": "-1h", "FLOTTA_WATCH": "no"} {
		_, err = parseSettings(nil, envOf(map[string]string{"YGG_SOCKET_ADDR": "unix:@x", name: value}))
		assert.Error(t, err, name)
	}
}

func TestLogLevels(t *testing.T) {
	for _, l := range []string{"ERROR", "WARN", "INFO", "DEBUG", "TRACE", "info"} {
		_, err := newLogger(l)
		assert.NoError(t, err, l)
	}
	_, err := newLogger("LOUD")
	assert.Error(t, err)
}

func TestSizeSettings(t *testing.T) {
	for value, want := range map[string]int64{"1G": 1 << 30, "512MiB": 512 << 20, "4k": 4096, "100": 100, "0": 0, "-1": -1} {
		s, err := parseSettings([]string{"--ingress-quota", value}, envOf(map[string]string{"YGG_SOCKET_ADDR": "unix:@x", "FLOTTA_MIN_FREE": value}))
		require.NoError(t, err, value)
		assert.Equal(t, want, s.minFreeBytes, value)
		assert.Equal(t, want, s.ingressQuota, value)
	}
	_, err := parseSettings(nil, envOf(map[string]string{"YGG_SOCKET_ADDR": "unix:@x", "FLOTTA_MIN_FREE": "1 gigabyte"}))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "FLOTTA_MIN_FREE")
	assert.Contains(t, err.Error(), "K, M, G or T")
}

func TestVersionNeedsNoSocket(t *testing.T) {
	s, err := parseSettings([]string{"--version"}, envOf(nil))
	require.NoError(t, err)
	assert.True(t, s.printVersion)
}

func TestPollAndNotifySettings(t *testing.T) {
	s, err := parseSettings(nil, envOf(map[string]string{"YGG_SOCKET_ADDR": "unix:@x", "FLOTTA_POLL_MAX": "10m", "FLOTTA_INGRESS_NOTIFY": "off"}))
	require.NoError(t, err)
	assert.Equal(t, 10*time.Minute, s.pollMax)
	assert.True(t, s.noNotify)
	s, err = parseSettings([]string{"--poll-max", "15s", "--ingress-notify", "auto"}, envOf(map[string]string{"YGG_SOCKET_ADDR": "unix:@x", "FLOTTA_INGRESS_NOTIFY": "off"}))
	require.NoError(t, err)
	assert.Equal(t, 15*time.Second, s.pollMax, "equal to the interval: no growth")
	assert.False(t, s.noNotify, "a flag wins over the environment")

	for _, c := range []struct{ name, value, want string }{
		{"FLOTTA_POLL_MAX", "5", "FLOTTA_POLL_MAX"},
		{"FLOTTA_POLL_MAX", "-1m", "positive Go duration"},
		{"FLOTTA_POLL_MAX", "10s", "below the sync interval 15s"},
		{"FLOTTA_INGRESS_NOTIFY", "yes", "want auto or off"},
		{"FLOTTA_INGRESS_NOTIFY", "OFF", "FLOTTA_INGRESS_NOTIFY"},
	} {
		_, err := parseSettings(nil, envOf(map[string]string{"YGG_SOCKET_ADDR": "unix:@x", c.name: c.value}))
		require.Error(t, err, c.name+"="+c.value)
		assert.Contains(t, err.Error(), c.want, c.name+"="+c.value)
	}
}
