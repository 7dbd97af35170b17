// Command device-worker is the Flotta device agent as a yggdrasil worker:
// yggd starts it, it registers as the "device" handler, receives the device
// configuration, runs the workloads and synchronises their data, and sends
// heartbeats.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped at build time (-ldflags "-X main.version=..."): the
// Makefile stamps the spec's Version, the RPM Version-Release.
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "status" {
		os.Exit(status(os.Args[2:], os.Getenv, os.Stdout, os.Stderr))
	}
	s, err := parseSettings(os.Args[1:], os.Getenv)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintf(os.Stderr, "device-worker: %v\n", err)
		os.Exit(2)
	case s.printVersion:
		fmt.Println("device-worker", version)
		return
	}
	log, err := newLogger(s.logLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "device-worker: %v\n", err)
		os.Exit(2)
	}
	defer func() { _ = log.Sync() }()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, s, log); err != nil {
		log.Error("device-worker stopped on error", zapError(err))
		_ = log.Sync()
		os.Exit(1)
	}
}
