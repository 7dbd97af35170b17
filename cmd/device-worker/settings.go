package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/project-flotta/flotta-device-worker/sync/bwlimit"
	"github.com/project-flotta/flotta-device-worker/sync/bytesize"
	"github.com/project-flotta/flotta-device-worker/sync/s3client"
)

// Defaults of the worker's own settings.
const (
	defaultDataDir      = "/var/local/yggdrasil/device"
	defaultPodmanSocket = "unix:///run/podman/podman.sock"
	defaultSyncInterval = 15 * time.Second
	defaultShutdownSync = 20 * time.Second
	// defaultRescanInterval is the safety-net pass of a mapping whose
	// changes a healthy file-system watcher reports; defaultSyncInterval
	// stays the pass of mappings no watcher covers.
	defaultRescanInterval    = 5 * time.Minute
	defaultReconcileInterval = time.Hour
	// defaultPollMax caps the adaptive interval of ingress polling.
	defaultPollMax = 5 * time.Minute
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
	// rescanInterval is the full pass of watched mappings; reconcileInterval
	// the pass that compares with the bucket too (0 = never).
	rescanInterval    time.Duration
	reconcileInterval time.Duration
	// noWatch turns the file-system watchers of egress sources off
	// (FLOTTA_WATCH=off): every egress path then waits for its pass.
	noWatch bool
	// pollMax caps the adaptive interval of ingress passes; noNotify turns
	// bucket notifications off (FLOTTA_INGRESS_NOTIFY=off).
	pollMax  time.Duration
	noNotify bool
	// maxStaleness bounds how long a change of a file that never settles
	// (a log held open) waits for its snapshot; "off" (negative) waits for
	// files to settle.
	maxStaleness time.Duration

	syncConcurrency int // parallel transfers; 0 = follow the link (adaptive)
	// s3Timeouts are the silent-server limit and the floor rate
	// (FLOTTA_S3_SILENT_TIMEOUT, FLOTTA_S3_FLOOR_RATE).
	s3Timeouts   s3client.Timeouts
	ingressQuota int64         // bytes per ingress mapping; 0 (default) or -1 = unlimited
	minFreeBytes int64         // ingress keeps this much free; 0 = default max(512 MiB, 5%), -1 = none
	shutdownSync time.Duration // bound of the last egress pass on SIGTERM
	// bwlimit is the bandwidth limit of all data sync together; the zero
	// Schedule is none.
	bwlimit bwlimit.Schedule

	// metricsFile, when set, is where the worker writes its sync figures
	// in Prometheus text format (node_exporter's textfile collector).
	metricsFile string

	printVersion bool // --version: print the version and exit
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
	rescan := env("FLOTTA_RESCAN_INTERVAL", defaultRescanInterval.String())
	fs.StringVar(&rescan, "rescan-interval", rescan, "time between full passes of a data path a healthy file-system watcher covers, a Go duration (env FLOTTA_RESCAN_INTERVAL)")
	reconcile := env("FLOTTA_RECONCILE_INTERVAL", defaultReconcileInterval.String())
	fs.StringVar(&reconcile, "reconcile-interval", reconcile, "time between reconcile passes that compare each data path with the bucket, a Go duration, 0 = never (env FLOTTA_RECONCILE_INTERVAL)")
	watch := env("FLOTTA_WATCH", "on")
	fs.StringVar(&watch, "watch", watch, "on: egress reacts to file-system events (inotify) and runs its full pass every rescan interval; off: every sync interval only (env FLOTTA_WATCH)")
	pollMax := env("FLOTTA_POLL_MAX", defaultPollMax.String())
	fs.StringVar(&pollMax, "poll-max", pollMax, "longest time between passes of an idle ingress data path (adaptive polling), a Go duration, at least the sync interval (env FLOTTA_POLL_MAX)")
	notifyMode := env("FLOTTA_INGRESS_NOTIFY", "auto")
	fs.StringVar(&notifyMode, "ingress-notify", notifyMode, "auto: listen for the bucket's notifications where the server offers them (MinIO); off: poll only (env FLOTTA_INGRESS_NOTIFY)")
	staleness := env("FLOTTA_MAX_STALENESS", "30s")
	fs.StringVar(&staleness, "max-staleness", staleness, "longest wait of a change of a file held open and written to (a log) before a snapshot of it is uploaded, a Go duration, or off (env FLOTTA_MAX_STALENESS)")
	concurrency := env("FLOTTA_SYNC_CONCURRENCY", "0")
	fs.StringVar(&concurrency, "sync-concurrency", concurrency, "parallel transfers, 0 = follow the link (8 to start, 2 to 64) (env FLOTTA_SYNC_CONCURRENCY)")
	silent := env("FLOTTA_S3_SILENT_TIMEOUT", s3client.DefaultTimeouts.Progress.String())
	fs.StringVar(&silent, "s3-silent-timeout", silent, "give an S3 request up when the server moves nothing for this long, a Go duration (env FLOTTA_S3_SILENT_TIMEOUT)")
	floor := env("FLOTTA_S3_FLOOR_RATE", "16K")
	fs.StringVar(&floor, "s3-floor-rate", floor, "bytes per second of the slowest link waited for: a sent request's answer is awaited for the silent timeout plus the bytes sent ahead of it at this rate (env FLOTTA_S3_FLOOR_RATE)")
	quota := env("FLOTTA_INGRESS_QUOTA", "0")
	fs.StringVar(&quota, "ingress-quota", quota, "size each ingress data path may hold (1G, 500M, bytes), 0 or -1 = unlimited (env FLOTTA_INGRESS_QUOTA)")
	minFree := env("FLOTTA_MIN_FREE", "0")
	fs.StringVar(&minFree, "min-free", minFree, "size ingress leaves free on the file system (1G, 500M, bytes), 0 = max(512 MiB, 5%), -1 = no guard (env FLOTTA_MIN_FREE)")
	shutdown := env("FLOTTA_SHUTDOWN_SYNC_TIMEOUT", defaultShutdownSync.String())
	fs.StringVar(&shutdown, "shutdown-sync-timeout", shutdown, "bound of the last egress pass on SIGTERM, 0 = none (env FLOTTA_SHUTDOWN_SYNC_TIMEOUT)")
	bw := env("FLOTTA_BWLIMIT", "")
	fs.StringVar(&bw, "bwlimit", bw, "bandwidth limit of all data sync together: 512K, UP:DOWN as 1M:256K, or a timetable in local time as \"08:00,512K 19:00,10M 23:00,off\"; empty or off = none (env FLOTTA_BWLIMIT)")
	fs.StringVar(&s.metricsFile, "metrics-file", env("FLOTTA_METRICS_FILE", ""), "write the sync figures to this file in Prometheus text format, for node_exporter's textfile collector (a *.prom file in its directory); empty = none (env FLOTTA_METRICS_FILE)")
	fs.BoolVar(&s.printVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return settings{}, err
	}
	if fs.NArg() > 0 {
		return settings{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if s.printVersion {
		return s, nil
	}
	if s.socketAddr == "" {
		return settings{}, errors.New("YGG_SOCKET_ADDR is not set: device-worker is started by yggd, which sets it (or pass --socket-addr)")
	}
	d, err := time.ParseDuration(interval)
	if err != nil || d <= 0 {
		return settings{}, fmt.Errorf("sync interval %q: want a positive Go duration such as 15s", interval)
	}
	s.syncInterval = d
	if s.rescanInterval, err = time.ParseDuration(rescan); err != nil || s.rescanInterval <= 0 {
		return settings{}, fmt.Errorf("rescan interval %q: want a positive Go duration such as 5m", rescan)
	}
	if s.reconcileInterval, err = time.ParseDuration(reconcile); err != nil || s.reconcileInterval < 0 {
		return settings{}, fmt.Errorf("reconcile interval %q: want a Go duration such as 1h, 0 for never", reconcile)
	}
	switch watch {
	case "on":
	case "off":
		s.noWatch = true
	default:
		return settings{}, fmt.Errorf("watch %q (FLOTTA_WATCH, --watch): want on or off", watch)
	}
	if staleness == "off" {
		s.maxStaleness = -1
	} else if s.maxStaleness, err = time.ParseDuration(staleness); err != nil || s.maxStaleness < time.Second {
		return settings{}, fmt.Errorf("FLOTTA_MAX_STALENESS (--max-staleness) %q: want a Go duration of at least 1s such as 30s, or off", staleness)
	}
	if s.pollMax, err = time.ParseDuration(pollMax); err != nil || s.pollMax <= 0 {
		return settings{}, fmt.Errorf("FLOTTA_POLL_MAX (--poll-max) %q: want a positive Go duration such as 5m", pollMax)
	}
	pollMaxSet := getenv("FLOTTA_POLL_MAX") != ""
	fs.Visit(func(f *flag.Flag) { pollMaxSet = pollMaxSet || f.Name == "poll-max" })
	switch {
	case s.pollMax >= s.syncInterval:
	case !pollMaxSet:
		s.pollMax = s.syncInterval // a long sync interval: the default cap follows it
	default:
		return settings{}, fmt.Errorf("FLOTTA_POLL_MAX (--poll-max) %s is below the sync interval %s: want at least the interval (equal: no adaptive polling)", s.pollMax, s.syncInterval)
	}
	switch notifyMode {
	case "auto":
	case "off":
		s.noNotify = true
	default:
		return settings{}, fmt.Errorf("FLOTTA_INGRESS_NOTIFY (--ingress-notify) %q: want auto or off", notifyMode)
	}
	if s.shutdownSync, err = time.ParseDuration(shutdown); err != nil || s.shutdownSync < 0 {
		return settings{}, fmt.Errorf("shutdown sync timeout %q: want a Go duration such as 20s", shutdown)
	}
	n, err := strconv.Atoi(concurrency)
	if err != nil || n < 0 {
		return settings{}, fmt.Errorf("sync concurrency %q: want a number of transfers, 0 for the default", concurrency)
	}
	s.syncConcurrency = n
	if s.s3Timeouts.Progress, err = time.ParseDuration(silent); err != nil || s.s3Timeouts.Progress <= 0 {
		return settings{}, fmt.Errorf("FLOTTA_S3_SILENT_TIMEOUT (--s3-silent-timeout) %q: want a positive Go duration such as 8s", silent)
	}
	if s.s3Timeouts.FloorRate, err = bytesize.Setting("floor rate (FLOTTA_S3_FLOOR_RATE, --s3-floor-rate)", floor); err != nil {
		return settings{}, err
	}
	if s.s3Timeouts.FloorRate <= 0 {
		return settings{}, fmt.Errorf("FLOTTA_S3_FLOOR_RATE (--s3-floor-rate) %q: want a positive rate in bytes per second such as 16K", floor)
	}
	if s.ingressQuota, err = bytesize.Setting("ingress quota (FLOTTA_INGRESS_QUOTA, --ingress-quota)", quota); err != nil {
		return settings{}, err
	}
	if s.minFreeBytes, err = bytesize.Setting("min free (FLOTTA_MIN_FREE, --min-free)", minFree); err != nil {
		return settings{}, err
	}
	if s.bwlimit, err = bwlimit.Parse(bw); err != nil {
		return settings{}, err
	}
	if s.dataDir == "" {
		return settings{}, errors.New("data directory is empty (FLOTTA_DATA_DIR / --data-dir)")
	}
	return s, nil
}
