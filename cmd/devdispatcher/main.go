// Command devdispatcher plays yggd's part for demos and tests: it serves
// the Dispatcher on an abstract unix socket, starts the worker with the
// environment yggd gives it (restarting it when it dies), delivers
// configuration messages from files, sends connection events on request,
// and prints everything the worker sends as JSON lines on stdout.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"

	yggdrasil "github.com/project-flotta/flotta-device-worker/proto"
)

// envList is a repeatable --env K=V flag.
type envList []string

func (e *envList) String() string { return strings.Join(*e, ",") }
func (e *envList) Set(v string) error {
	if !strings.Contains(v, "=") || strings.HasPrefix(v, "=") {
		return fmt.Errorf("--env %q: want KEY=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}

type options struct {
	workerPath      string
	configPath      string
	outFile         string
	clientID        string
	configDir       string
	logLevel        string
	handler         string
	resend          time.Duration
	poll            time.Duration
	restartDelay    time.Duration
	disconnectAfter time.Duration
	env             envList
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "devdispatcher: %v\n", err)
		os.Exit(1)
	}
}

func parseOptions() (options, error) {
	var o options
	self, _ := os.Executable()
	flag.StringVar(&o.workerPath, "worker", filepath.Join(filepath.Dir(self), "device-worker"), "worker binary to start")
	flag.StringVar(&o.configPath, "config", "", "configuration message FILE, or DIR of *.json messages, to deliver")
	flag.StringVar(&o.outFile, "out", "", "also append the JSON lines to this file")
	flag.StringVar(&o.clientID, "client-id", "dev-device", "YGG_CLIENT_ID given to the worker")
	flag.StringVar(&o.configDir, "config-dir", "/etc/yggdrasil", "YGG_CONFIG_DIR given to the worker")
	flag.StringVar(&o.logLevel, "log-level", "INFO", "YGG_LOG_LEVEL given to the worker")
	flag.StringVar(&o.handler, "handler", "device", "handler (and directive) of the worker")
	flag.DurationVar(&o.resend, "resend", 5*time.Second, "resend every configuration this often, as flotta does (0 disables)")
	flag.DurationVar(&o.poll, "poll", 500*time.Millisecond, "how often to check --config files for changes")
	flag.DurationVar(&o.restartDelay, "restart-delay", time.Second, "first delay before restarting a dead worker; doubles up to 30s")
	flag.DurationVar(&o.disconnectAfter, "disconnect-after", 0, "send RECEIVED_DISCONNECT this long after start (0: never)")
	flag.Var(&o.env, "env", "extra KEY=VALUE for the worker, like the worker toml's env (PATH and YGG_* are dropped); repeatable")
	flag.Parse()
	if flag.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if _, err := os.Stat(o.workerPath); err != nil {
		return o, fmt.Errorf("worker binary: %w (set --worker)", err)
	}
	return o, nil
}

func run() error {
	o, err := parseOptions()
	if err != nil {
		return err
	}
	rec, closeOut, err := newRecorder(o.outFile)
	if err != nil {
		return err
	}
	defer closeOut()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	socketName := "@yggd-dispatcher-" + randomHex(6)
	socketAddr := "unix:" + socketName
	lis, err := net.Listen("unix", socketName)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", socketAddr, err)
	}
	d := newDispatcher(rec, &yggdrasil.Config{LogLevel: o.logLevel, ClientId: o.clientID, SocketAddr: socketAddr})
	srv := grpc.NewServer()
	yggdrasil.RegisterDispatcherServer(srv, d)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	rec.record("listen", map[string]any{"address": socketAddr})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sup := &supervisor{
		path: o.workerPath, env: workerEnv(o, socketAddr),
		minDelay: o.restartDelay, maxDelay: 30 * time.Second, stopWait: 10 * time.Second,
		rec: rec, onExit: d.forget,
	}
	supervised := make(chan struct{})
	go func() { sup.run(ctx); close(supervised) }()

	dl := &deliverer{d: d, rec: rec, handler: o.handler}
	if o.configPath != "" {
		if _, err := configFiles(o.configPath); err != nil {
			return err
		}
		go dl.watch(ctx, o.configPath, o.poll, o.resend)
	}
	if o.disconnectAfter > 0 {
		go func() {
			select {
			case <-ctx.Done():
			case <-time.After(o.disconnectAfter):
				dl.notify(ctx, yggdrasil.Event_RECEIVED_DISCONNECT)
			}
		}()
	}
	go readCommands(ctx, os.Stdin, dl, cancel, rec)

	<-ctx.Done()
	<-supervised // the worker got SIGTERM and ended
	return nil
}

// workerEnv is exactly what yggd gives a worker: PATH, the YGG_*
// variables, proxies, and the extra entries minus PATH and YGG_*.
func workerEnv(o options, socketAddr string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"YGG_SOCKET_ADDR=" + socketAddr,
		"YGG_CLIENT_ID=" + o.clientID,
		"YGG_CONFIG_DIR=" + o.configDir,
		"YGG_LOG_LEVEL=" + strings.ToUpper(o.logLevel),
	}
	for _, p := range []string{"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"} {
		if v, ok := os.LookupEnv(p); ok {
			env = append(env, p+"="+v)
		}
	}
	for _, kv := range o.env {
		k, _, _ := strings.Cut(kv, "=")
		if k == "PATH" || strings.HasPrefix(k, "YGG_") {
			fmt.Fprintf(os.Stderr, "devdispatcher: dropping --env %s (yggd does not let workers set PATH or YGG_*)\n", k)
			continue
		}
		env = append(env, kv)
	}
	return env
}
