package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/project-flotta/flotta-device-worker/sync/check"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/sync/s3client"
)

func newCheckCmd(o *options) *cobra.Command {
	var download bool
	cmd := &cobra.Command{
		Use:   "check DIR s3://BUCKET/PREFIX",
		Short: "compare DIR with the prefix, without the journal",
		Long: `Compare the files of DIR with the objects under s3://BUCKET/PREFIX by size and
content (MD5 ETags, or the part size the engine records for multipart ones),
without the journal. One line per difference on stdout (every file with -v);
exit status 4 when they differ.`,
		Args: twoOperands,
		RunE: func(_ *cobra.Command, args []string) error { return runCheck(o, args, download) },
	}
	cmd.Flags().BoolVar(&download, "download", false, "compare objects whose ETag is not an MD5 and records no part size by downloading and hashing them")
	return cmd
}

// checkSummary is check's --json object.
type checkSummary struct {
	Matching  int64   `json:"matching"`
	Missing   int64   `json:"missing"`
	Differing int64   `json:"differing"`
	Extra     int64   `json:"extra"`
	SizeOnly  int64   `json:"size_only"`
	Skipped   int64   `json:"skipped"`
	Errors    int64   `json:"errors"`
	Requests  int64   `json:"requests"`
	Took      float64 `json:"took"`
	ExitCode  int     `json:"exit_code"`
	Error     string  `json:"error,omitempty"`
}

// runCheck compares DIR with the prefix: one line per difference on stdout
// (every file with -v), a summary on stderr (or --json on stdout).
func runCheck(o *options, args []string, download bool) error {
	u := args[1]
	if !strings.HasPrefix(u, "s3://") || len(strings.SplitN(u[5:], "/", 2)[0]) == 0 {
		return usageError("%q is not s3://BUCKET/PREFIX", u)
	}
	bucket, prefix, _ := strings.Cut(u[5:], "/")
	dir, err := filepath.Abs(args[0])
	if err != nil {
		return usageError("%v", err)
	}
	ep, err := endpoint(o)
	if err != nil {
		return err
	}
	counter := &s3client.Counter{}
	client, err := s3client.New(s3client.Config{
		Host: ep.Host, Port: ep.Port, Secure: ep.Secure, Region: ep.Region,
		AccessKey: ep.AccessKey, SecretKey: ep.SecretKey, CAPEM: ep.CAPEM,
		Wrap:     counter.Wrap,
		Conns:    2 * cmp.Or(o.concurrency, datasync.DefaultConcurrency),
		Timeouts: o.timeouts,
	})
	if err != nil {
		return usageError("%v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	sum, err := check.Run(ctx, client, check.Options{
		Dir: dir, Bucket: bucket, Prefix: strings.Trim(prefix, "/"), Download: download, Concurrency: cmp.Or(o.concurrency, datasync.DefaultConcurrency),
	}, func(r check.Result) {
		if o.json {
			return
		}
		switch {
		case r.Kind == check.Match && !o.verbose:
		case r.Kind == check.Match && r.SizeOnly:
			fmt.Fprintf(o.stdout, "%-7s %s (size only)\n", r.Kind, r.Path)
		case r.Detail != "":
			fmt.Fprintf(o.stdout, "%-7s %s: %s\n", r.Kind, r.Path, r.Detail)
		default:
			fmt.Fprintf(o.stdout, "%-7s %s\n", r.Kind, r.Path)
		}
	})
	var result error
	switch {
	case err != nil:
		result = failed(err)
	case !sum.Equal():
		result = &exitError{code: exitDiffers, err: fmt.Errorf("the directory and the bucket differ")}
	}
	if o.json {
		js := checkSummary{Matching: sum.Matching, Missing: sum.Missing, Differing: sum.Differing, Extra: sum.Extra,
			SizeOnly: sum.SizeOnly, Skipped: sum.Skipped, Errors: sum.Errors, Requests: counter.Requests(),
			Took: time.Since(start).Seconds()}
		if result != nil {
			js.ExitCode, js.Error = result.(*exitError).code, result.Error()
		}
		_ = json.NewEncoder(o.stdout).Encode(js)
		return result
	}
	fmt.Fprintf(o.stderr, "%d matching, %d missing from the bucket, %d differing, %d extra in the bucket, %d errors",
		sum.Matching, sum.Missing, sum.Differing, sum.Extra, sum.Errors)
	if sum.SizeOnly > 0 {
		fmt.Fprintf(o.stderr, "; %d compared by size only (no MD5 ETag; --download compares them)", sum.SizeOnly)
	}
	if sum.Skipped > 0 {
		fmt.Fprintf(o.stderr, "; %d skipped (links, special or temporary files)", sum.Skipped)
	}
	fmt.Fprintf(o.stderr, "; %d S3 requests; %s\n", counter.Requests(), time.Since(start).Round(time.Millisecond))
	return result
}
