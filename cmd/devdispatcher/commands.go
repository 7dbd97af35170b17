package main

import (
	"bufio"
	"context"
	"io"
	"strings"

	yggdrasil "github.com/project-flotta/flotta-device-worker/proto"
)

// readCommands runs the stdin commands: disconnect, unexpected-disconnect,
// restored, send <file>, quit. End of input is not quit, so the dispatcher
// can run with stdin closed.
func readCommands(ctx context.Context, in io.Reader, dl *deliverer, quit context.CancelFunc, rec *recorder) {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		switch cmd := fields[0]; {
		case cmd == "disconnect" && len(fields) == 1:
			dl.notify(ctx, yggdrasil.Event_RECEIVED_DISCONNECT)
		case cmd == "unexpected-disconnect" && len(fields) == 1:
			dl.notify(ctx, yggdrasil.Event_UNEXPECTED_DISCONNECT)
		case cmd == "restored" && len(fields) == 1:
			dl.notify(ctx, yggdrasil.Event_CONNECTION_RESTORED)
		case cmd == "send" && len(fields) == 2:
			dl.deliverFile(ctx, fields[1])
		case cmd == "quit" && len(fields) == 1:
			quit()
			return
		default:
			rec.record("command", map[string]any{"ok": false, "input": sc.Text(),
				"error": "commands: disconnect | unexpected-disconnect | restored | send <file> | quit"})
		}
	}
}
