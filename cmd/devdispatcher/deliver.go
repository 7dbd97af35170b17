package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"google.golang.org/grpc/status"

	yggdrasil "github.com/project-flotta/flotta-device-worker/proto"
)

// deliverTimeout is the deadline yggd gives Worker.Send.
const deliverTimeout = time.Minute

// deliverer sends configuration messages to the worker the way yggd does:
// directive "device", a new message id each time, dropped when no worker
// is registered.
type deliverer struct {
	d       *dispatcher
	rec     *recorder
	handler string
}

func (dl *deliverer) deliverFile(ctx context.Context, file string) {
	content, err := os.ReadFile(file)
	if err != nil {
		dl.rec.record("deliver", map[string]any{"file": file, "ok": false, "error": err.Error()})
		return
	}
	id := newMessageID()
	fields := map[string]any{"file": file, "message_id": id}
	w, ok := dl.d.worker(dl.handler)
	if !ok {
		fields["dropped"] = true
		fields["error"] = "no worker registered as " + dl.handler
		dl.rec.record("deliver", fields)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, deliverTimeout)
	defer cancel()
	_, err = w.Send(ctx, &yggdrasil.Data{MessageId: id, Directive: dl.handler, Content: content})
	fields["ok"] = err == nil
	if err != nil {
		st := status.Convert(err)
		fields["code"] = st.Code().String()
		fields["error"] = st.Message()
	}
	dl.rec.record("deliver", fields)
}

func (dl *deliverer) notify(ctx context.Context, ev yggdrasil.Event) {
	fields := map[string]any{"event": ev.String()}
	w, ok := dl.d.worker(dl.handler)
	if !ok {
		fields["dropped"] = true
		fields["error"] = "no worker registered as " + dl.handler
		dl.rec.record("notify", fields)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, deliverTimeout)
	defer cancel()
	_, err := w.NotifyEvent(ctx, &yggdrasil.EventNotification{Name: ev})
	fields["ok"] = err == nil
	if err != nil {
		fields["error"] = err.Error()
	}
	dl.rec.record("notify", fields)
}

// configFiles lists the messages of --config: the file itself, or the
// *.json files of a directory in name order.
func configFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	files, err := filepath.Glob(filepath.Join(path, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	sort.Strings(files)
	return files, nil
}

// watch delivers every configuration message at start, again when its
// modification time changes (polled every poll), and all of them every
// resend (0 disables resending).
func (dl *deliverer) watch(ctx context.Context, path string, poll, resend time.Duration) {
	seen := map[string]time.Time{}
	var resendC <-chan time.Time
	if resend > 0 {
		t := time.NewTicker(resend)
		defer t.Stop()
		resendC = t.C
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		files, err := configFiles(path)
		if err != nil {
			dl.rec.record("deliver", map[string]any{"file": path, "ok": false, "error": err.Error()})
		}
		for _, f := range files {
			st, err := os.Stat(f)
			if err != nil {
				continue
			}
			if mt, ok := seen[f]; !ok || !mt.Equal(st.ModTime()) {
				seen[f] = st.ModTime()
				dl.deliverFile(ctx, f)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-resendC:
			for _, f := range files {
				dl.deliverFile(ctx, f)
			}
		}
	}
}

// newMessageID returns a random UUID-shaped id, new for every delivery as
// flotta's control plane does.
func newMessageID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
