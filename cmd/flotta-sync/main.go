// Command flotta-sync runs one pass of the device worker's sync engine:
//
//	flotta-sync push DIR s3://BUCKET/PREFIX   upload new and changed files
//	flotta-sync pull s3://BUCKET/PREFIX DIR   download new and changed objects
//	flotta-sync check DIR s3://BUCKET/PREFIX  compare, without the journal
//
// It keeps the same journal as the worker (under --state), so a second run
// moves only what changed. Flags are GNU style and may come anywhere on the
// line; "flotta-sync help COMMAND" lists a command's flags, "flotta-sync
// completion bash|zsh|fish" writes a shell completion script. The exit
// status tells what happened (exitcode.go; docs/flotta-sync.md has the
// table). Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
package main

import (
	"io"
	"os"
	"runtime/pprof"
)

// version is stamped at build time (-ldflags "-X main.version=..."): the
// Makefile stamps the spec's Version.
var version = "dev"

func main() {
	// FLOTTA_SYNC_CPUPROFILE=FILE writes a CPU profile of the run (for
	// performance work: go tool pprof bin/flotta-sync FILE).
	if p := os.Getenv("FLOTTA_SYNC_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				code := run(os.Args[1:], os.Stdout, os.Stderr)
				pprof.StopCPUProfile()
				f.Close()
				os.Exit(code)
			}
		}
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs flotta-sync with args and returns its exit status. Reports meant
// for scripts (a dry run's list, check's differences, --json, help) go to
// stdout, everything else to stderr.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	return exitCode(root.Execute(), root, stderr)
}
