package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/project-flotta/flotta-device-worker/sync/syncstatus"
)

// status is "device-worker status": the state of each data path, read from
// the snapshot the running worker keeps in its data directory, for a person
// at the device. It exits 0 when it printed the status, 1 when there is
// none to read, 2 on a usage error.
func status(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("device-worker status", flag.ContinueOnError)
	fset.SetOutput(stderr)
	dataDir := getenv("FLOTTA_DATA_DIR")
	if dataDir == "" {
		dataDir = defaultDataDir
	}
	fset.StringVar(&dataDir, "data-dir", dataDir, "the worker's state directory (env FLOTTA_DATA_DIR)")
	all := fset.Bool("all", false, "print every field of every data path too")
	asJSON := fset.Bool("json", false, "print the snapshot as the worker wrote it (JSON)")
	fset.Usage = func() {
		fmt.Fprintln(stderr, "usage: device-worker status [--data-dir DIR] [--all] [--json]")
		fset.PrintDefaults()
	}
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fset.NArg() > 0 {
		fmt.Fprintf(stderr, "device-worker status: unexpected arguments %q\n", fset.Args())
		return 2
	}
	path := filepath.Join(dataDir, "sync", syncstatus.FileName)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(stderr, "device-worker status: no status in %s: the worker has not run with this data directory (--data-dir, FLOTTA_DATA_DIR)\n", path)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "device-worker status: %v\n", err)
		return 1
	}
	if *asJSON {
		_, _ = stdout.Write(data)
		return 0
	}
	v, err := syncstatus.Parse(data)
	if err != nil {
		fmt.Fprintf(stderr, "device-worker status: %s: %v\n", path, err)
		return 1
	}
	syncstatus.Print(stdout, v, time.Now(), *all)
	return 0
}
