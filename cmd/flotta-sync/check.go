package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/project-flotta/flotta-device-worker/sync/check"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/sync/s3client"
)

// runCheck compares c.local with the prefix: one line per difference on
// stdout (every file with -v), a summary on stderr; exit 1 when they differ.
func runCheck(c *config, ep *datasync.Endpoint, stdout, stderr io.Writer) int {
	counter := &s3client.Counter{}
	client, err := s3client.New(s3client.Config{
		Host: ep.Host, Port: ep.Port, Secure: ep.Secure, Region: ep.Region,
		AccessKey: ep.AccessKey, SecretKey: ep.SecretKey, CAPEM: ep.CAPEM,
		Wrap:     counter.Wrap,
		Conns:    2 * cmp.Or(c.concurrency, datasync.DefaultConcurrency),
		Timeouts: c.timeouts,
	})
	if err != nil {
		fmt.Fprintln(stderr, "flotta-sync:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	sum, err := check.Run(ctx, client, check.Options{
		Dir: c.local, Bucket: c.bucket, Prefix: c.prefix, Download: c.download, Concurrency: cmp.Or(c.concurrency, datasync.DefaultConcurrency),
	}, func(r check.Result) {
		switch {
		case r.Kind == check.Match && !c.verbose:
		case r.Kind == check.Match && r.SizeOnly:
			fmt.Fprintf(stdout, "%-7s %s (size only)\n", r.Kind, r.Path)
		case r.Detail != "":
			fmt.Fprintf(stdout, "%-7s %s: %s\n", r.Kind, r.Path, r.Detail)
		default:
			fmt.Fprintf(stdout, "%-7s %s\n", r.Kind, r.Path)
		}
	})
	fmt.Fprintf(stderr, "%d matching, %d missing from the bucket, %d differing, %d extra in the bucket, %d errors",
		sum.Matching, sum.Missing, sum.Differing, sum.Extra, sum.Errors)
	if sum.SizeOnly > 0 {
		fmt.Fprintf(stderr, "; %d compared by size only (no MD5 ETag; --download compares them)", sum.SizeOnly)
	}
	if sum.Skipped > 0 {
		fmt.Fprintf(stderr, "; %d skipped (links, special or temporary files)", sum.Skipped)
	}
	fmt.Fprintf(stderr, "; %d S3 requests; %s\n", counter.Requests(), time.Since(start).Round(time.Millisecond))
	switch {
	case err != nil:
		fmt.Fprintln(stderr, "flotta-sync:", err)
		return 1
	case !sum.Equal():
		fmt.Fprintln(stderr, "flotta-sync: the directory and the bucket differ")
		return 1
	}
	return 0
}
