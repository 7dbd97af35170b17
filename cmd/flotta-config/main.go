// Command flotta-config builds a device configuration message, the JSON the
// control plane sends to the worker, from Kubernetes objects as flotta's
// operator sees them and as its configuration assembler would: one
// EdgeDevice, the EdgeWorkloads of its namespace, the Secrets and ConfigMaps
// they refer to, registry auth Secrets, and what describes its bucket (an
// Object Bucket Claim's ConfigMap and Secret with the openshift-storage/s3
// Route and the router CA, which win, or the external storage named in
// spec.storage.s3).
//
//	flotta-config [-version V] [-route-host H] [-router-ca PEM] [-o FILE] objects.yaml...
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
	flag.Int64Var(&s.heartbeatSeconds, "heartbeat", 0, "configuration.heartbeat.period_seconds; 0 takes the EdgeDevice's spec.heartbeat.periodSeconds (default 60), as the operator does")
	flag.Int64Var(&s.monitorSeconds, "monitor", 0, "workloads_monitoring_interval in seconds; 0 leaves it out, as the operator does")
	flag.StringVar(&s.routeHost, "route-host", "", "host of the openshift-storage/s3 Route, for an Object Bucket Claim (instead of a Route object)")
	routerCA := flag.String("router-ca", "", "PEM file of the router CA (openshift-ingress-operator/router-ca tls.crt), for an Object Bucket Claim (instead of that Secret)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: flotta-config [flags] FILE.yaml...\n\nBuilds a configuration message from an EdgeDevice, EdgeWorkloads, ConfigMaps and Secrets.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if *routerCA != "" {
		pem, err := os.ReadFile(*routerCA)
		if err != nil {
			fmt.Fprintln(os.Stderr, "flotta-config:", err)
			os.Exit(1)
		}
		s.routerCA = string(pem)
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

// warnf tells the user something the message will not show.
func warnf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "flotta-config: warning: "+format+"\n", args...)
}
