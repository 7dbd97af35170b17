package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// dispatcher is the dev dispatcher playing yggd, with the worker under it.
type dispatcher struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	records chan record
	dataDir string
}

// record is one JSON line the dev dispatcher prints.
type record map[string]any

func (r record) str(k string) string { s, _ := r[k].(string); return s }

func startDispatcher(ctx context.Context, o options, msgPath string, pod *podmanService) (*dispatcher, error) {
	d := &dispatcher{records: make(chan record, 64), dataDir: filepath.Join(o.workDir, "device")}
	socket := "unix://" + filepath.Join(o.workDir, "no-podman.sock")
	if pod != nil {
		socket = pod.svc.URI
	}
	logf, err := os.Create(filepath.Join(o.workDir, "worker.log"))
	if err != nil {
		return nil, err
	}
	d.cmd = exec.Command(filepath.Join(o.binDir, "devdispatcher"),
		"--worker", filepath.Join(o.binDir, "device-worker"),
		"--config", msgPath,
		"--client-id", "demo-device",
		"--env", "FLOTTA_DATA_DIR="+d.dataDir,
		"--env", "FLOTTA_PODMAN_SOCKET="+socket,
		"--env", "FLOTTA_SYNC_INTERVAL=3s",
	)
	d.cmd.Stderr = logf
	if d.stdin, err = d.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start devdispatcher: %w", err)
	}
	logf.Close()
	go func() {
		defer close(d.records)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var r record
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				d.records <- r
			}
		}
	}()
	say("dev dispatcher started: it plays yggd, starts device-worker (data dir %s) and resends the configuration every 5 s", d.dataDir)
	return d, nil
}

// command sends a stdin command (disconnect, quit, ...) to the dispatcher.
func (d *dispatcher) command(line string) {
	_, _ = fmt.Fprintln(d.stdin, line)
}

// stop unregisters the device (the worker removes its pod, volumes and
// state), then stops the dispatcher, which stops the worker.
func (d *dispatcher) stop() {
	say("disconnecting the device: the worker removes its pod, volumes and state")
	d.command("disconnect")
	d.await(func(r record) bool { return r.str("kind") == "notify" }, 5*time.Second)
	time.Sleep(3 * time.Second) // the worker removes things in the background
	d.command("quit")
	done := make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-done
	}
	if _, err := os.Stat(filepath.Join(d.dataDir, "volumes", workload)); os.IsNotExist(err) {
		say("device clean: volumes/%s removed", workload)
	}
}

// await drains records until one matches or the timeout passes.
func (d *dispatcher) await(match func(record) bool, timeout time.Duration) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case r, ok := <-d.records:
			if !ok || match(r) {
				return
			}
		case <-t.C:
			return
		}
	}
}
