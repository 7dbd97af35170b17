package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/s3client"
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
		rescanInterval: defaultRescanInterval, reconcileInterval: time.Hour, pollMax: defaultPollMax,
		s3Timeouts: s3client.Timeouts{Progress: 8 * time.Second, FloorRate: 16 << 10}, maxStaleness: 30 * time.Second}, s)

	s, err = parseSettings(nil, envOf(map[string]string{"YGG_SOCKET_ADDR": "unix:@x", "FLOTTA_SYNC_CONCURRENCY": "4",
		"FLOTTA_INGRESS_QUOTA": "1048576", "FLOTTA_MIN_FREE": "-1", "FLOTTA_SHUTDOWN_SYNC_TIMEOUT": "0",
		"FLOTTA_RESCAN_INTERVAL": "10m", "FLOTTA_RECONCILE_INTERVAL": "0", "FLOTTA_WATCH": "off",
		"FLOTTA_S3_SILENT_TIMEOUT": "20s", "FLOTTA_S3_FLOOR_RATE": "4K"}))
	require.NoError(t, err)
	assert.Equal(t, s3client.Timeouts{Progress: 20 * time.Second, FloorRate: 4 << 10}, s.s3Timeouts)
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
		"FLOTTA_RESCAN_INTERVAL": "0", "FLOTTA_RECONCILE_INTERVAL": "-1h", "FLOTTA_WATCH": "no",
		"FLOTTA_S3_SILENT_TIMEOUT": "0s", "FLOTTA_S3_FLOOR_RATE": "fast"} {
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
	s, err = parseSettings(nil, envOf(map[string]string{"YGG_SOCKET_ADDR": "unix:@x", "FLOTTA_SYNC_INTERVAL": "1h"}))
	require.NoError(t, err, "the default cap follows a long sync interval")
	assert.Equal(t, time.Hour, s.pollMax)
	_, err = parseSettings([]string{"--poll-max", "5m"}, envOf(map[string]string{"YGG_SOCKET_ADDR": "unix:@x", "FLOTTA_SYNC_INTERVAL": "1h"}))
	require.Error(t, err, "a cap given below the interval")
	assert.Contains(t, err.Error(), "below the sync interval 1h0m0s")

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

func TestBandwidthLimitSetting(t *testing.T) {
	base := map[string]string{"YGG_SOCKET_ADDR": "unix:@x"}
	with := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for k, v := range base {
			m[k] = v
		}
		return m
	}
	s, err := parseSettings(nil, envOf(base))
	require.NoError(t, err)
	assert.True(t, s.bwlimit.Unlimited(), "no limit by default")
	assert.Nil(t, newLimiter(s.bwlimit), "no limit: no limiter in the transfer path")

	for value, want := range map[string]string{
		"512K": "512K", "1M:256K": "1M:256K", "off": "off", "0": "off",
		"08:00,512K 19:00,10M 23:00,off": "08:00,512K 19:00,10M 23:00,off", "Mon-08:00,1M Sat-00:00,off": "Mon-08:00,1M Sat-00:00,off",
	} {
		s, err := parseSettings(nil, envOf(with("FLOTTA_BWLIMIT", value)))
		require.NoError(t, err, value)
		assert.Equal(t, want, s.bwlimit.String(), value)
	}
	s, err = parseSettings([]string{"--bwlimit", "2M"}, envOf(with("FLOTTA_BWLIMIT", "1M")))
	require.NoError(t, err)
	assert.Equal(t, "2M", s.bwlimit.String(), "the flag wins over the environment")
	l := newLimiter(s.bwlimit)
	require.NotNil(t, l)
	assert.Equal(t, "2M", l.Current().String())

	// A timetable whose every entry is off limits nothing: no limiter.
	s, err = parseSettings(nil, envOf(with("FLOTTA_BWLIMIT", "08:00,off 20:00,0")))
	require.NoError(t, err)
	assert.Nil(t, newLimiter(s.bwlimit))

	for _, bad := range []string{"fast", "1Q", "512K:", "25:00,1M", "08:00", "08:00,1M 08:00,2M", "Moon-08:00,1M", "-1M"} {
		_, err := parseSettings(nil, envOf(with("FLOTTA_BWLIMIT", bad)))
		require.Error(t, err, bad)
		assert.Contains(t, err.Error(), "FLOTTA_BWLIMIT", bad)
		assert.Contains(t, err.Error(), `"`+bad+`"`, bad)
		_, err = parseSettings([]string{"--bwlimit", bad}, envOf(base))
		require.Error(t, err, bad)
		assert.Contains(t, err.Error(), "--bwlimit", bad)
	}
}

func TestMaxStalenessSetting(t *testing.T) {
	s, err := parseSettings(nil, envOf(map[string]string{"YGG_SOCKET_ADDR": "unix:@x", "FLOTTA_MAX_STALENESS": "10s"}))
	require.NoError(t, err)
	assert.Equal(t, 10*time.Second, s.maxStaleness)
	s, err = parseSettings([]string{"--max-staleness", "off"}, envOf(map[string]string{"YGG_SOCKET_ADDR": "unix:@x"}))
	require.NoError(t, err)
	assert.Negative(t, s.maxStaleness, "off: files wait until they settle")
	_, err = parseSettings(nil, envOf(map[string]string{"YGG_SOCKET_ADDR": "unix:@x", "FLOTTA_MAX_STALENESS": "10ms"}))
	require.ErrorContains(t, err, "FLOTTA_MAX_STALENESS")
}
