package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/project-flotta/flotta-device-worker/podman"
	yggdrasil "github.com/project-flotta/flotta-device-worker/proto"
	"github.com/project-flotta/flotta-device-worker/sync/bwlimit"
	"github.com/project-flotta/flotta-device-worker/sync/bytesize"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/sync/syncstatus"
	"github.com/project-flotta/flotta-device-worker/worker"
)

// gracePeriod bounds how long in-flight calls may finish after SIGTERM.
const gracePeriod = 5 * time.Second

// statusInterval is how often the sync status is looked at; the status
// file and the metrics file are written only when it changed (or once a
// minute), which costs nothing while idle.
const statusInterval = 2 * time.Second

// run starts the podman manager and the sync engine, then the worker
// (which applies the persisted configuration at once), registers with yggd,
// serves the Worker service on the address yggd returns, and stops
// gracefully when ctx ends: one last egress pass, bounded in time, then exit.
func run(ctx context.Context, s settings, log *zap.Logger) error {
	log.Info("starting device-worker", zap.String("version", version),
		zap.String("socket", s.socketAddr), zap.String("client_id", s.clientID),
		zap.String("data_dir", s.dataDir), zap.String("podman_socket", s.podmanSocket),
		zap.Duration("sync_interval", s.syncInterval), zap.Duration("rescan_interval", s.rescanInterval), zap.Bool("watch", !s.noWatch),
		zap.Duration("reconcile_interval", s.reconcileInterval), zap.Duration("poll_max", s.pollMax), zap.Duration("max_staleness", s.maxStaleness),
		zap.Bool("ingress_notify", !s.noNotify), zap.Stringer("bwlimit", s.bwlimit))

	pods, err := podman.NewManager(podman.Config{
		Socket:     s.podmanSocket,
		VolumesDir: worker.VolumesDirOf(s.dataDir),
		StateDir:   filepath.Join(s.dataDir, "manifests"),
		DeviceID:   s.clientID,
	}, log.Named("podman"))
	if err != nil {
		return err
	}
	reconcile := s.reconcileInterval
	if reconcile == 0 {
		reconcile = -1 // the engine reads 0 as its default
	}
	opts := datasync.Options{
		StateDir:          filepath.Join(s.dataDir, "sync"),
		Interval:          s.syncInterval,
		WatchedInterval:   s.rescanInterval,
		ReconcileInterval: reconcile,
		PollMax:           s.pollMax,
		MaxStaleness:      s.maxStaleness,
		NoNotify:          s.noNotify,
		Concurrency:       s.syncConcurrency,
		Timeouts:          s.s3Timeouts,
		NoWatch:           s.noWatch,
		Limiter:           newLimiter(s.bwlimit),
	}
	opts.DefaultQuota, opts.MinFreeBytes, opts.MinFreePercent = bytesize.DiskGuard(s.ingressQuota, s.minFreeBytes)
	engine, err := datasync.New(opts, log.Named("sync"))
	if err != nil {
		return fmt.Errorf("open the sync journal: %w", err)
	}
	defer engine.Close()
	background, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()
	go pods.Run(background)
	go func() { _ = engine.Run(background) }()
	status := &syncstatus.Publisher{Path: filepath.Join(opts.StateDir, syncstatus.FileName), MetricsFile: s.metricsFile,
		Worker: version, Status: engine.Status, Log: log.Named("status")}
	go status.Run(background, statusInterval)

	conn, err := worker.Dial(s.socketAddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	dispatcher := yggdrasil.NewDispatcherClient(conn)

	w, err := worker.New(worker.Options{DataDir: s.dataDir, Dispatcher: dispatcher, Log: log, Bandwidth: opts.Limiter}, pods, engine)
	if err != nil {
		return err
	}
	if err := w.Start(ctx); err != nil {
		return err
	}
	defer finalSync(w, s.shutdownSync, log)
	defer w.Stop()

	regCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	addr, err := worker.Register(regCtx, dispatcher, worker.Directive)
	cancel()
	if err != nil {
		return err
	}
	lis, err := worker.Listen(addr)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	yggdrasil.RegisterWorkerServer(srv, w)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	log.Info("registered with yggd; serving", zap.String("handler", worker.Directive), zap.String("address", addr))

	select {
	case err := <-served:
		return fmt.Errorf("serve on %s: %w", addr, err)
	case <-ctx.Done():
	}
	log.Info("stopping")
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(gracePeriod):
		srv.Stop()
	}
	return nil
}

// newLimiter is the engine's limiter for s, or nil when s never limits
// anything: the transfers then take no limiter path at all.
func newLimiter(s bwlimit.Schedule) *bwlimit.Limiter {
	if s.Unlimited() {
		return nil
	}
	return bwlimit.New(s)
}

// finalSync runs the last egress pass after the worker stopped, so files
// written just before a shutdown reach the bucket; a timeout of 0 skips it.
func finalSync(w *worker.Worker, timeout time.Duration, log *zap.Logger) {
	if timeout <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := w.FinalSync(ctx); err != nil {
		log.Warn("last egress pass before exit did not finish", zap.Error(err))
	}
}
