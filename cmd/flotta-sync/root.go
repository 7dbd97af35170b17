package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/project-flotta/flotta-device-worker/sync/bytesize"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/sync/s3client"
)

// commands builds flotta-sync's commands, listed by help in this order. A
// new command is one more constructor here: a transfer command is a
// transferSpec (transfer.go) and newTransferCmd.
var commands = []func(o *options) *cobra.Command{
	func(o *options) *cobra.Command { return newTransferCmd(o, pushSpec) },
	func(o *options) *cobra.Command { return newTransferCmd(o, moveSpec) },
	func(o *options) *cobra.Command { return newTransferCmd(o, pullSpec) },
	newCheckCmd,
	newVersionCmd,
	newManCmd,
}

// options are the flags every command shares, and where output goes.
type options struct {
	stdout, stderr io.Writer

	endpoint    string
	region      string
	caFile      string
	concurrency int
	timeouts    s3client.Timeouts // --silent-timeout, --floor-rate
	verbose     bool
	logFormat   string
	json        bool
}

// newRoot builds the command tree writing to stdout and stderr.
func newRoot(stdout, stderr io.Writer) *cobra.Command {
	o := &options{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "flotta-sync",
		Short: "sync a directory with an S3 prefix, as the Flotta device worker does",
		Long: `flotta-sync runs one pass of the Flotta device worker's sync engine.

  flotta-sync push DIR s3://BUCKET/PREFIX    upload new and changed files of DIR
  flotta-sync pull s3://BUCKET/PREFIX DIR    download new and changed objects into DIR
  flotta-sync check DIR s3://BUCKET/PREFIX   compare DIR with the prefix, without the journal

It keeps the worker's journal (under --state), so a second run moves only what
changed. Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
Sizes and rates: a bare number is bytes; K, M, G, T are powers of 1024
(1K = 1024; Ki, KiB, KB and lower case read the same).
Exit status: 0 done; 1 failed; 2 usage error; 3 done but entries skipped
(unreadable, vanished, refused); 4 check found differences.`,
		Version:       version,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SetOut(o.stderr)
			_ = cmd.Usage()
			return usageError("missing command")
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetVersionTemplate("flotta-sync {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError("%v", err) })
	pf := root.PersistentFlags()
	pf.StringVar(&o.endpoint, "endpoint", os.Getenv("AWS_ENDPOINT_URL"), "S3 endpoint URL, http:// or https:// (default $AWS_ENDPOINT_URL)")
	pf.StringVar(&o.region, "region", "us-east-1", `S3 region ("" discovers it)`)
	pf.StringVar(&o.caFile, "ca-file", "", "PEM file of CA certificates trusted in addition to the system roots")
	pf.IntVar(&o.concurrency, "concurrency", 0, fmt.Sprintf("parallel transfers; 0 follows the link (%d to start, %d to %d)", datasync.DefaultConcurrency, datasync.MinConcurrency, datasync.DefaultMaxConcurrency))
	o.timeouts = s3client.DefaultTimeouts
	if d, err := time.ParseDuration(os.Getenv("FLOTTA_S3_SILENT_TIMEOUT")); err == nil && d > 0 {
		o.timeouts.Progress = d
	}
	if n, err := bytesize.Parse(os.Getenv("FLOTTA_S3_FLOOR_RATE")); err == nil && n > 0 {
		o.timeouts.FloorRate = n
	}
	pf.DurationVar(&o.timeouts.Progress, "silent-timeout", o.timeouts.Progress, "give a request up when the server moves nothing for this long (default $FLOTTA_S3_SILENT_TIMEOUT or 8s)")
	pf.Var(bytesize.NewValue(&o.timeouts.FloorRate), "floor-rate", "`rate` in bytes per second of the slowest link waited for: once a request is sent, its answer is awaited for --silent-timeout plus the bytes sent ahead of it at this rate (default $FLOTTA_S3_FLOOR_RATE or 16K)")
	pf.BoolVarP(&o.verbose, "verbose", "v", false, "log every decision (check: list matching files too)")
	pf.StringVar(&o.logFormat, "log-format", "text", "log format on stderr: text or json")
	pf.BoolVar(&o.json, "json", false, "end with one JSON object on stdout (files, bytes, requests, skipped, conflicts, errors, took) instead of the summary line")
	_ = root.MarkPersistentFlagFilename("ca-file", "pem", "crt")
	_ = root.RegisterFlagCompletionFunc("log-format", fixedCompletion("text", "json"))
	for _, c := range commands {
		root.AddCommand(c(o))
	}
	return root
}

// fixedCompletion completes a flag with a fixed set of values.
func fixedCompletion(values ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}

// twoOperands checks a command's operands, as a usage error.
func twoOperands(cmd *cobra.Command, args []string) error {
	if len(args) != 2 {
		return usageError("%s needs two operands (%s), got %d", cmd.Name(), cmd.Use[len(cmd.Name())+1:], len(args))
	}
	return nil
}

func newVersionCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintln(o.stdout, "flotta-sync", version)
		},
	}
}
