package main

import (
	"fmt"

	"sigs.k8s.io/yaml"
)

// The configuration message as flotta's control plane sends it (DESIGN §3).
type message struct {
	DeviceID                    string       `json:"device_id"`
	Version                     string       `json:"version"`
	WorkloadsMonitoringInterval int          `json:"workloads_monitoring_interval"`
	Configuration               deviceConfig `json:"configuration"`
	Workloads                   []workload   `json:"workloads"`
	Secrets                     []any        `json:"secrets"`
}

type deviceConfig struct {
	Heartbeat heartbeat `json:"heartbeat"`
	Storage   *storage  `json:"storage,omitempty"`
}

type heartbeat struct {
	PeriodSeconds int `json:"period_seconds"`
}

type storage struct {
	S3 *s3Storage `json:"s3,omitempty"`
}

type workload struct {
	Name          string            `json:"name"`
	Namespace     string            `json:"namespace,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
	Specification string            `json:"specification"`
	Data          *workloadData     `json:"data,omitempty"`
}

type workloadData struct {
	Egress  []dataPath `json:"egress,omitempty"`
	Ingress []dataPath `json:"ingress,omitempty"`
}

type dataPath struct {
	Source string `json:"source"`
	Target string `json:"target"`
}

// settings are the message fields that do not come from Kubernetes objects.
type settings struct {
	version          string
	heartbeatSeconds int
	monitorSeconds   int
}

// buildMessage assembles the configuration message for the single
// EdgeDevice among objs, with every EdgeWorkload found.
func buildMessage(objs *objects, s settings) (*message, error) {
	if len(objs.devices) != 1 {
		return nil, fmt.Errorf("need exactly one EdgeDevice among the inputs, found %d", len(objs.devices))
	}
	dev := &objs.devices[0]
	st, err := resolveStorage(dev, objs)
	if err != nil {
		return nil, err
	}
	msg := &message{
		DeviceID:                    dev.Name,
		Version:                     s.version,
		WorkloadsMonitoringInterval: s.monitorSeconds,
		Configuration:               deviceConfig{Heartbeat: heartbeat{PeriodSeconds: s.heartbeatSeconds}},
		Workloads:                   []workload{},
		Secrets:                     []any{},
	}
	if st != nil {
		msg.Configuration.Storage = &storage{S3: st}
	}
	for _, w := range objs.workloads {
		if w.Spec.Type != "" && w.Spec.Type != "pod" {
			return nil, fmt.Errorf("EdgeWorkload %s: type %q is not supported (want pod)", w.Name, w.Spec.Type)
		}
		spec, err := yaml.Marshal(w.Spec.Pod.Spec)
		if err != nil {
			return nil, fmt.Errorf("EdgeWorkload %s: pod spec: %w", w.Name, err)
		}
		msg.Workloads = append(msg.Workloads, workload{
			Name:          w.Name,
			Namespace:     w.Namespace,
			Labels:        w.Labels,
			Annotations:   w.Annotations,
			Specification: string(spec),
			Data:          w.Spec.Data,
		})
	}
	return msg, nil
}
