package main

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Defaults of the worker's own settings.
const (
	defaultDataDir      = "/var/local/yggdrasil/device"
	defaultPodmanSocket = "unix:///run/podman/podman.sock"
	defaultSyncInterval = 15 * time.Second
)

// settings are the worker's inputs: yggd's YGG_* variables and the
// worker's FLOTTA_* variables, each also a flag. The environment sets the
// flag's default; a flag given on the command line wins.
type settings struct {
	socketAddr   string
	clientID     string
	logLevel     string
	configDir    string
	dataDir      string
	podmanSocket string
	syncInterval time.Duration
}

func parseSettings(args []string, getenv func(string) string) (settings, error) {
	var s settings
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("device-worker", flag.ContinueOnError)
	fs.StringVar(&s.socketAddr, "socket-addr", env("YGG_SOCKET_ADDR", ""), "yggd dispatcher socket, e.g. unix:@yggd-dispatcher-abc (env YGG_SOCKET_ADDR, required)")
	fs.StringVar(&s.clientID, "client-id", env("YGG_CLIENT_ID", ""), "device id given by yggd (env YGG_CLIENT_ID)")
	fs.StringVar(&s.logLevel, "log-level", env("YGG_LOG_LEVEL", "INFO"), "ERROR, WARN, INFO, DEBUG or TRACE (env YGG_LOG_LEVEL)")
	fs.StringVar(&s.configDir, "config-dir", env("YGG_CONFIG_DIR", ""), "yggd configuration directory (env YGG_CONFIG_DIR)")
	fs.StringVar(&s.dataDir, "data-dir", env("FLOTTA_DATA_DIR", defaultDataDir), "state directory; volumes are <data-dir>/volumes (env FLOTTA_DATA_DIR)")
	fs.StringVar(&s.podmanSocket, "podman-socket", env("FLOTTA_PODMAN_SOCKET", defaultPodmanSocket), "podman service socket (env FLOTTA_PODMAN_SOCKET)")
	interval := env("FLOTTA_SYNC_INTERVAL", defaultSyncInterval.String())
	fs.StringVar(&interval, "sync-interval", interval, "time between synchronisation passes, a Go duration (env FLOTTA_SYNC_INTERVAL)")
	if err := fs.Parse(args); err != nil {
		return settings{}, err
	}
	if fs.NArg() > 0 {
		return settings{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if s.socketAddr == "" {
		return settings{}, errors.New("YGG_SOCKET_ADDR is not set: device-worker is started by yggd, which sets it (or pass --socket-addr)")
	}
	d, err := time.ParseDuration(interval)
	if err != nil || d <= 0 {
		return settings{}, fmt.Errorf("sync interval %q: want a positive Go duration such as 15s", interval)
	}
	s.syncInterval = d
	if s.dataDir == "" {
		return settings{}, errors.New("data directory is empty (FLOTTA_DATA_DIR / --data-dir)")
	}
	return s, nil
}
