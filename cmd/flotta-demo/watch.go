package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/project-flotta/flotta-device-worker/worker"
)

// progress is what the demo has seen so far.
type progress struct {
	registered bool
	putDone    bool
	uploaded   map[string]bool // object keys seen under statistics/
	arrived    bool            // the ingress object is on the device
	written    int             // stats files the demo wrote itself (no podman)
	doneAt     int             // heartbeats seen when both directions had worked
	heartbeats int
}

func (p *progress) done() bool { return len(p.uploaded) >= 2 && p.arrived }

// watch prints what happens until data has moved both ways and a heartbeat
// reported it, the duration passes, or ctx ends.
func watch(ctx context.Context, o options, s3 *s3Server, pod *podmanService, d *dispatcher) error {
	p := &progress{uploaded: map[string]bool{}}
	volume := filepath.Join(d.dataDir, "volumes", workload)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	deadline := time.After(o.duration)
	for {
		select {
		case <-ctx.Done():
			say("interrupted")
			return nil
		case <-deadline:
			return fmt.Errorf("data did not move both ways within %s (egress objects: %d, ingress arrived: %v); see the logs with -keep", o.duration, len(p.uploaded), p.arrived)
		case r, ok := <-d.records:
			if !ok {
				return errors.New("the dev dispatcher exited")
			}
			if o.verbose {
				b, _ := json.Marshal(r)
				fmt.Println(string(b))
			}
			if err := p.record(ctx, r, s3); err != nil {
				return err
			}
			if p.doneAt > 0 && p.heartbeats > p.doneAt {
				say("done: files written to /export/stats are in the bucket, the object put under remote/data is on the device, and the heartbeat reports it")
				return nil
			}
		case <-tick.C:
			if pod == nil && p.registered {
				writeStats(volume, p)
			}
			if err := p.poll(ctx, s3, pod, volume); err != nil {
				say("check: %v", err)
			}
		}
	}
}

func (p *progress) record(ctx context.Context, r record, s3 *s3Server) error {
	switch r.str("kind") {
	case "register":
		p.registered = true
		say("worker registered with the dispatcher as handler %q on %s", r.str("handler"), r.str("address"))
		if !p.putDone {
			if err := s3.put(ctx, ingestKey, "hello from the control plane at "+time.Now().Format(time.RFC3339)+"\n"); err != nil {
				return fmt.Errorf("put %s: %w", ingestKey, err)
			}
			p.putDone = true
			say("control plane: put s3://%s/%s (ingress remote/data → /export/local/download/data)", bucket, ingestKey)
		}
	case "worker-exit", "worker-restart":
		say("dispatcher: %s %v", r.str("kind"), r["error"])
	case "send":
		content, _ := json.Marshal(r["content"])
		var hb worker.Heartbeat
		if err := json.Unmarshal(content, &hb); err != nil {
			return nil
		}
		p.heartbeats++
		say("heartbeat: %s", describe(hb))
		if p.done() && p.doneAt == 0 {
			p.doneAt = p.heartbeats
		}
	}
	return nil
}

// poll looks at the bucket and the device for data that moved.
func (p *progress) poll(ctx context.Context, s3 *s3Server, pod *podmanService, volume string) error {
	keys, err := s3.keys(ctx, "statistics/")
	if err != nil {
		return err
	}
	for _, k := range keys {
		if !p.uploaded[k] {
			p.uploaded[k] = true
			if len(p.uploaded) <= 3 {
				say("egress: s3://%s/%s arrived in the bucket", bucket, k)
			}
		}
	}
	if p.arrived {
		return nil
	}
	local := filepath.Join(volume, "local", "download", "data", filepath.Base(ingestKey))
	b, err := os.ReadFile(local)
	if err != nil {
		return nil // not yet
	}
	p.arrived = true
	say("ingress: %s arrived on the device: %q", local, strings.TrimSpace(string(b)))
	if pod != nil {
		out, err := pod.exec("cat", "/export/local/download/data/"+filepath.Base(ingestKey))
		if err != nil {
			say("inside the container: %v", err)
		} else {
			say("inside the container, /export/local/download/data/%s reads %q", filepath.Base(ingestKey), out)
		}
	}
	return nil
}

// writeStats plays the workload when podman cannot: a file every 4 s.
func writeStats(volume string, p *progress) {
	if time.Now().Second()%4 != 0 {
		return
	}
	dir := filepath.Join(volume, "stats")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	p.written++
	load, _ := os.ReadFile("/proc/loadavg")
	_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("loadavg-%d.txt", p.written)), load, 0o644)
}

// describe summarises a heartbeat on one line.
func describe(hb worker.Heartbeat) string {
	var b strings.Builder
	fmt.Fprintf(&b, "status=%s version=%s", hb.Status, hb.Version)
	for _, w := range hb.Workloads {
		fmt.Fprintf(&b, " | workload %s %s", w.Name, w.Status)
		if w.LastDataUpload != "" {
			fmt.Fprintf(&b, " last_data_upload=%s", w.LastDataUpload)
		}
	}
	if hb.DataSyncState != worker.DataSyncOn {
		fmt.Fprintf(&b, " | data sync %s", hb.DataSyncState)
	}
	for _, m := range hb.DataSync {
		from, to := "/export/"+m.Source, "s3:"+m.Target
		if m.Direction == "ingress" {
			from, to = "s3:"+m.Source, "/export/"+m.Target
		}
		fmt.Fprintf(&b, " | %s %s → %s files=%d bytes=%d", m.Direction, from, to, m.FilesTotal, m.BytesTotal)
		if m.LastError != "" {
			fmt.Fprintf(&b, " error=%q", m.LastError)
		}
	}
	for _, e := range hb.Events {
		fmt.Fprintf(&b, " | %s %s", e.Type, e.Reason)
	}
	return b.String()
}
