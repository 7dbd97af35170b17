package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/sys/unix"

	"github.com/project-flotta/flotta-device-worker/sync/bytesize"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/sync/s3client"
)

// live is the progress of a run at one moment, from the engine's counters
// and the bytes on the wire.
type live struct {
	files, plannedFiles int64
	bytes, plannedBytes int64
	inFlight            int64
	requests            int64
	elapsed             time.Duration
}

func sample(p *datasync.Progress, wire func() int64, counter *s3client.Counter, start time.Time) live {
	s := p.Snapshot()
	l := live{files: s.DoneFiles, plannedFiles: s.PlannedFiles, plannedBytes: s.PlannedBytes,
		inFlight: s.InFlight, requests: counter.Requests(), elapsed: time.Since(start)}
	// Bytes on the wire move during a transfer; retries may send some
	// twice, and a file already in the bucket (adopted) sends none.
	l.bytes = min(max(wire(), s.DoneBytes), s.PlannedBytes)
	return l
}

// rate is bytes per second since the start.
func (l live) rate() float64 {
	if l.elapsed <= 0 {
		return 0
	}
	return float64(l.bytes) / l.elapsed.Seconds()
}

// eta is the time left at the average rate, or -1 when unknown.
func (l live) eta() time.Duration {
	r := l.rate()
	if r <= 0 {
		return -1
	}
	return time.Duration(float64(l.plannedBytes-l.bytes) / r * float64(time.Second)).Round(time.Second)
}

// line is the plain progress line of --stats.
func (l live) line() string {
	eta := "-"
	if d := l.eta(); d >= 0 {
		eta = d.String()
	}
	return fmt.Sprintf("progress: %d/%d files, %s/%s, %s/s, ETA %s, %d in flight, %d requests, %s",
		l.files, l.plannedFiles, bytesize.Format(l.bytes), bytesize.Format(l.plannedBytes),
		bytesize.Format(int64(l.rate())), eta, l.inFlight, l.requests, l.elapsed.Round(time.Second))
}

// display shows the progress of a run until stop.
type display struct {
	stop func()
}

// startProgress starts what -P and --stats ask for: a bar refreshed in
// place on a terminal (mpb, log lines printed above it through logOut), or
// a plain line at an interval.
func startProgress(c *transferConfig, p *datasync.Progress, wire func() int64, counter *s3client.Counter,
	start time.Time, logOut *switchWriter) display {
	get := func() live { return sample(p, wire, counter, start) }
	switch {
	case c.progress && !c.json && terminalWidth(c.stderr) > 0:
		return barProgress(c.stderr, get, logOut)
	case c.stats > 0:
		return lineProgress(c.stderr, get, c.stats)
	case c.progress: // no terminal, or one of unknown size
		return lineProgress(c.stderr, get, time.Second)
	}
	return display{stop: func() {}}
}

func lineProgress(w io.Writer, get func() live, every time.Duration) display {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintln(w, get().line())
			}
		}
	})
	return display{stop: func() { close(done); wg.Wait() }}
}

// barProgress draws one bar of bytes, with the files done of the total
// before it and the rate, ETA and transfers in flight after it.
func barProgress(w io.Writer, get func() live, logOut *switchWriter) display {
	const every = 200 * time.Millisecond
	pr := mpb.New(mpb.WithOutput(w), mpb.WithRefreshRate(every), mpb.WithWidth(100))
	var mu sync.Mutex
	cur := get()
	snap := func() live { mu.Lock(); defer mu.Unlock(); return cur }
	// A total of 0 leaves it open: the plan streams, SetTotal grows it.
	bar := pr.AddBar(0,
		mpb.PrependDecorators(decor.Any(func(decor.Statistics) string {
			l := snap()
			return fmt.Sprintf("%d/%d files", l.files, l.plannedFiles)
		}, decor.WCSyncSpaceR)),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string {
			l := snap()
			eta := "-"
			if d := l.eta(); d >= 0 {
				eta = d.String()
			}
			return fmt.Sprintf("%s / %s, %s/s, ETA %s, %d in flight", bytesize.Format(l.bytes),
				bytesize.Format(l.plannedBytes), bytesize.Format(int64(l.rate())), eta, l.inFlight)
		})),
	)
	logOut.set(pr) // log lines go above the bar
	done := make(chan struct{})
	var wg sync.WaitGroup
	update := func() {
		l := get()
		mu.Lock()
		cur = l
		mu.Unlock()
		bar.SetTotal(l.plannedBytes, false)
		bar.SetCurrent(l.bytes)
	}
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				update()
			}
		}
	})
	return display{stop: func() {
		close(done)
		wg.Wait()
		update()
		bar.SetTotal(-1, true) // complete: the last state stays on screen
		pr.Wait()
		logOut.set(w)
	}}
}

// terminalWidth is the width of the terminal w is, 0 when it is none or
// does not know its size (a serial console, script(1) without a terminal):
// the bar needs the size to redraw in place, plain lines do not.
func terminalWidth(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
}
