package main

import (
	"encoding/json"
	"fmt"

	"sigs.k8s.io/yaml"

	"github.com/project-flotta/flotta-device-worker/worker/config"
)

// settings are the message fields that do not come from Kubernetes objects.
type settings struct {
	version          string
	heartbeatSeconds int64
	monitorSeconds   int64
}

// buildMessage assembles the configuration message for the single
// EdgeDevice among objs, with every EdgeWorkload found, and checks it with
// the worker's own parser so that only messages a device accepts come out.
func buildMessage(objs *objects, s settings) (*config.Message, error) {
	if len(objs.devices) != 1 {
		return nil, fmt.Errorf("need exactly one EdgeDevice among the inputs, found %d", len(objs.devices))
	}
	dev := &objs.devices[0]
	st, err := resolveStorage(dev, objs)
	if err != nil {
		return nil, err
	}
	msg := &config.Message{
		DeviceID:                    dev.Name,
		Version:                     s.version,
		WorkloadsMonitoringInterval: s.monitorSeconds,
		Configuration:               config.Configuration{Heartbeat: config.Heartbeat{PeriodSeconds: s.heartbeatSeconds}},
	}
	if st != nil {
		msg.Configuration.Storage = &config.Storage{S3: st}
	}
	for _, w := range objs.workloads {
		if w.Spec.Type != "" && w.Spec.Type != "pod" {
			return nil, fmt.Errorf("EdgeWorkload %s: type %q is not supported (want pod)", w.Name, w.Spec.Type)
		}
		spec, err := yaml.Marshal(w.Spec.Pod.Spec)
		if err != nil {
			return nil, fmt.Errorf("EdgeWorkload %s: pod spec: %w", w.Name, err)
		}
		msg.Workloads = append(msg.Workloads, config.Workload{
			Name:          w.Name,
			Namespace:     w.Namespace,
			Labels:        w.Labels,
			Annotations:   w.Annotations,
			Specification: string(spec),
			Data:          w.Spec.Data,
		})
	}
	data, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	if _, err := config.Parse(data); err != nil {
		return nil, fmt.Errorf("the resulting message would be refused by the device: %w", err)
	}
	return msg, nil
}
