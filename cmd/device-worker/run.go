package main

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	yggdrasil "github.com/project-flotta/flotta-device-worker/proto"
	"github.com/project-flotta/flotta-device-worker/worker"
)

// gracePeriod bounds how long in-flight calls may finish after SIGTERM.
const gracePeriod = 5 * time.Second

// run starts the worker (which applies the persisted configuration at
// once), registers with yggd, serves the Worker service on the address
// yggd returns, and stops gracefully when ctx ends.
func run(ctx context.Context, s settings, log *zap.Logger, wl worker.Workloads, ds worker.DataSync) error {
	log.Info("starting device-worker",
		zap.String("socket", s.socketAddr), zap.String("client_id", s.clientID),
		zap.String("data_dir", s.dataDir), zap.String("podman_socket", s.podmanSocket),
		zap.Duration("sync_interval", s.syncInterval))

	conn, err := worker.Dial(s.socketAddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	dispatcher := yggdrasil.NewDispatcherClient(conn)

	w, err := worker.New(worker.Options{DataDir: s.dataDir, Dispatcher: dispatcher, Log: log}, wl, ds)
	if err != nil {
		return err
	}
	if err := w.Start(ctx); err != nil {
		return err
	}
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
