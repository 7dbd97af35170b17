// Command flotta-demo shows one device end to end on this machine: it starts
// versitygw on 127.0.0.1, a private podman service (when podman works here),
// and the development dispatcher playing yggd with the worker; it builds the
// device's configuration message from the seed document's Kubernetes objects
// with flotta-config, then shows files written into /export/stats arriving in
// the bucket, an object put under remote/data arriving on the device, and
// the heartbeats. It ends by itself (or on Ctrl-C) and cleans up.
//
//	make demo        # or: bin/flotta-demo [-duration 2m] [-keep]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// Demo credentials: the versitygw account and the bucket the device uses.
const (
	accessKey = "demo-access-key"
	secretKey = "demo-secret-key-4f2a"
	bucket    = "device-bucket-6"
	workload  = "os-stats"
	ingestKey = "remote/data/hello-from-the-cloud.txt"
)

type options struct {
	binDir   string
	workDir  string
	duration time.Duration
	keep     bool
	verbose  bool
	noPodman bool
}

func main() {
	var o options
	self, _ := os.Executable()
	flag.StringVar(&o.binDir, "bin", filepath.Dir(self), "directory holding versitygw, device-worker, devdispatcher and flotta-config")
	flag.StringVar(&o.workDir, "dir", "", "work directory (default: a new temporary directory)")
	flag.DurationVar(&o.duration, "duration", 2*time.Minute, "give up after this long if the data has not moved")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (bucket, device data, logs) at the end")
	flag.BoolVar(&o.verbose, "v", false, "print every record of the dev dispatcher")
	flag.BoolVar(&o.noPodman, "no-podman", false, "do not run the workload on podman: show data sync alone")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo: %v\n", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, o options) (err error) {
	if o.workDir == "" {
		if o.workDir, err = os.MkdirTemp("", "flotta-demo-"); err != nil {
			return err
		}
	}
	if !o.keep {
		defer os.RemoveAll(o.workDir)
	} else {
		defer say("kept %s (bucket under s3/, device data under device/, logs *.log)", o.workDir)
	}
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()

	s3, err := startS3(ctx, o)
	if err != nil {
		return err
	}
	cleanups = append(cleanups, s3.stop)
	say("S3: versitygw on %s, bucket %s", s3.URL(), bucket)

	var pod *podmanService
	if o.noPodman {
		say("podman: not used (-no-podman); the demo writes the workload's files itself")
	} else if pod, err = startPodman(o); err != nil {
		say("podman: not usable here (%v); going on with sync alone — the demo writes the workload's files itself", err)
	} else {
		cleanups = append(cleanups, pod.stop)
		say("podman: private service on %s, image %s", pod.svc.URI, pod.svc.Image)
	}

	msgPath, err := buildMessage(o, s3, pod != nil)
	if err != nil {
		return err
	}
	say("configuration message built by flotta-config from the seed's EdgeDevice, EdgeWorkload, ConfigMap and Secret: %s", msgPath)

	disp, err := startDispatcher(ctx, o, msgPath, pod)
	if err != nil {
		return err
	}
	cleanups = append(cleanups, disp.stop)
	return watch(ctx, o, s3, pod, disp)
}
