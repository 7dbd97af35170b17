// Command flotta-config builds a device configuration message, the JSON the
// control plane sends to the worker, from Kubernetes objects as flotta's
// operator sees them: one EdgeDevice, its EdgeWorkloads, and the ConfigMaps
// and Secrets that describe its bucket (an Object Bucket Claim's, which wins,
// or the external storage named in spec.storage.s3).
//
//	flotta-config [-version V] [-o FILE] objects.yaml...
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	var s settings
	out := flag.String("o", "-", "write the message to this file (atomically), - for stdout")
	flag.StringVar(&s.version, "version", "1", "the message's version (the control plane's resource version)")
	flag.Int64Var(&s.heartbeatSeconds, "heartbeat", 60, "configuration.heartbeat.period_seconds")
	flag.Int64Var(&s.monitorSeconds, "monitor", 15, "workloads_monitoring_interval in seconds")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: flotta-config [flags] FILE.yaml...\n\nBuilds a configuration message from an EdgeDevice, EdgeWorkloads, ConfigMaps and Secrets.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Args(), s, *out); err != nil {
		fmt.Fprintln(os.Stderr, "flotta-config:", err)
		os.Exit(1)
	}
}

func run(files []string, s settings, out string) error {
	objs, err := readObjects(files)
	if err != nil {
		return err
	}
	msg, err := buildMessage(objs, s)
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(msg, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if out == "-" {
		_, err = os.Stdout.Write(data)
		return err
	}
	return writeAtomic(out, data)
}

// writeAtomic replaces path in one step, so a watcher never reads half a file.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".flotta-config-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
