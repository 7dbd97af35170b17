package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/project-flotta/flotta-device-worker/worker/config"
)

// settings are the message fields that do not come from Kubernetes objects.
type settings struct {
	version string
	// heartbeatSeconds overrides the EdgeDevice's spec.heartbeat.periodSeconds
	// when > 0.
	heartbeatSeconds int64
	// monitorSeconds sets workloads_monitoring_interval when > 0; the
	// operator never sends it.
	monitorSeconds int64
	// routeHost and routerCA stand for the openshift-storage/s3 Route's host
	// and the openshift-ingress-operator/router-ca Secret's tls.crt (PEM)
	// when those objects are not among the inputs.
	routeHost string
	routerCA  string
}

// message is the configuration message in the shape flotta-operator's
// assembler produces (models.DeviceConfigurationMessage): the same fields,
// defaults included, so that what a developer builds is what a device gets.
type message struct {
	Configuration               deviceConfiguration `json:"configuration"`
	DeviceID                    string              `json:"device_id"`
	Secrets                     []secret            `json:"secrets,omitempty"`
	Version                     string              `json:"version"`
	WorkloadsMonitoringInterval int64               `json:"workloads_monitoring_interval,omitempty"`
	Workloads                   []workload          `json:"workloads,omitempty"`
}

type deviceConfiguration struct {
	Heartbeat heartbeat       `json:"heartbeat"`
	Metrics   metrics         `json:"metrics"`
	Mounts    []any           `json:"mounts"`
	Storage   *config.Storage `json:"storage,omitempty"`
}

type heartbeat struct {
	HardwareProfile hardwareProfile `json:"hardware_profile"`
	PeriodSeconds   int64           `json:"period_seconds,omitempty"`
}

type hardwareProfile struct {
	Include bool   `json:"include,omitempty"`
	Scope   string `json:"scope,omitempty"`
}

// metrics is the operator's default metrics configuration (no
// spec.metrics on the device).
type metrics struct {
	Receiver struct {
		RequestNumSamples int64 `json:"request_num_samples"`
		TimeoutSeconds    int64 `json:"timeout_seconds"`
	} `json:"receiver"`
}

type workload struct {
	Annotations     map[string]string       `json:"annotations,omitempty"`
	ConfigMaps      []string                `json:"configmaps,omitempty"`
	Data            *config.Data            `json:"data,omitempty"`
	ImageRegistries *config.ImageRegistries `json:"imageRegistries,omitempty"`
	Labels          map[string]string       `json:"labels,omitempty"`
	Name            string                  `json:"name"`
	Namespace       string                  `json:"namespace"`
	Specification   string                  `json:"specification"`
}

// secret is one of the device's secrets: data is a JSON object, as a
// string, mapping each key to the base64 of its value.
type secret struct {
	Data string `json:"data"`
	Name string `json:"name"`
}

// defaultHeartbeatSeconds is the operator's period when the device sets none.
const defaultHeartbeatSeconds = 60

// buildMessage assembles the configuration message for the single
// EdgeDevice among objs, as the operator's assembler does: the EdgeWorkloads
// of the device's namespace, the Secrets their containers take env from,
// each workload's ConfigMaps and registry auth file, and the storage. It
// checks the result with the worker's own parser, so that only messages a
// device accepts come out.
func buildMessage(objs *objects, s settings) (*message, error) {
	if len(objs.devices) != 1 {
		return nil, fmt.Errorf("need exactly one EdgeDevice among the inputs, found %d", len(objs.devices))
	}
	dev := &objs.devices[0]
	st, err := resolveStorage(dev, objs, s)
	if err != nil {
		return nil, err
	}
	msg := &message{
		DeviceID:                    dev.Name,
		Version:                     s.version,
		WorkloadsMonitoringInterval: s.monitorSeconds,
		Configuration: deviceConfiguration{
			Heartbeat: heartbeat{PeriodSeconds: defaultHeartbeatSeconds},
			Mounts:    []any{},
		},
	}
	if hb := dev.Spec.Heartbeat; hb != nil {
		msg.Configuration.Heartbeat.PeriodSeconds = hb.PeriodSeconds
		if hp := hb.HardwareProfile; hp != nil {
			msg.Configuration.Heartbeat.HardwareProfile = hardwareProfile{Include: hp.Include, Scope: hp.Scope}
		}
	}
	if s.heartbeatSeconds > 0 {
		msg.Configuration.Heartbeat.PeriodSeconds = s.heartbeatSeconds
	}
	msg.Configuration.Metrics.Receiver.RequestNumSamples = 30000
	msg.Configuration.Metrics.Receiver.TimeoutSeconds = 10
	if st != nil {
		msg.Configuration.Storage = &config.Storage{S3: st}
	}
	var devWorkloads []*edgeWorkload
	for i := range objs.workloads {
		// The operator sends a device only the workloads of its namespace.
		w := &objs.workloads[i]
		if w.Namespace != dev.Namespace {
			warnf("EdgeWorkload %s/%s left out: not in the device's namespace %s", w.Namespace, w.Name, dev.Namespace)
			continue
		}
		devWorkloads = append(devWorkloads, w)
	}
	for _, w := range devWorkloads {
		if w.Spec.Type != "" && w.Spec.Type != "pod" {
			return nil, fmt.Errorf("EdgeWorkload %s: type %q is not supported (want pod)", w.Name, w.Spec.Type)
		}
		spec, err := yaml.Marshal(w.Spec.Pod.Spec)
		if err != nil {
			return nil, fmt.Errorf("EdgeWorkload %s: pod spec: %w", w.Name, err)
		}
		out := workload{
			Name:          w.Name,
			Namespace:     w.Namespace,
			Labels:        w.Labels,
			Annotations:   w.Annotations,
			Specification: string(spec),
			Data:          w.Spec.Data,
		}
		if out.ConfigMaps, err = workloadConfigMaps(w, dev.Namespace, objs); err != nil {
			return nil, fmt.Errorf("EdgeWorkload %s: %w", w.Name, err)
		}
		if r := w.Spec.ImageRegistries; r != nil && r.SecretRef != nil {
			auth, err := authFile(dev.Namespace, r.SecretRef.Name, objs)
			if err != nil {
				return nil, fmt.Errorf("EdgeWorkload %s: imageRegistries: %w", w.Name, err)
			}
			out.ImageRegistries = &config.ImageRegistries{AuthFile: auth}
		}
		msg.Workloads = append(msg.Workloads, out)
	}
	if msg.Secrets, err = deviceSecrets(devWorkloads, dev.Namespace, objs); err != nil {
		return nil, err
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

// refs collects object names with the keys that must exist; a nil key set
// means every reference is optional.
type refs map[string]map[string]bool

func (r refs) add(name string, optional *bool, key string) {
	opt := optional != nil && *optional
	keys, seen := r[name]
	switch {
	case !seen && opt:
		r[name] = nil
		return
	case opt:
		return
	case keys == nil:
		keys = map[string]bool{}
		r[name] = keys
	}
	if key != "" {
		keys[key] = true
	}
}

func allContainers(spec *corev1.PodSpec) []corev1.Container {
	return append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
}

// deviceSecrets lists the Secrets the workloads' containers take env from
// (secretKeyRef, secretRef), as the operator does: a Secret used only as a
// volume is not sent.
func deviceSecrets(ws []*edgeWorkload, ns string, objs *objects) ([]secret, error) {
	want := refs{}
	for _, w := range ws {
		for _, c := range allContainers(&w.Spec.Pod.Spec) {
			for _, f := range c.EnvFrom {
				if f.SecretRef != nil {
					want.add(f.SecretRef.Name, f.SecretRef.Optional, "")
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					want.add(e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Optional, e.ValueFrom.SecretKeyRef.Key)
				}
			}
		}
	}
	var out []secret
	for _, name := range sortedNames(want) {
		obj := objs.secret(ns, name)
		if obj == nil {
			if want[name] == nil {
				continue
			}
			return nil, fmt.Errorf("Secret %s/%s not found (a workload takes env from it)", ns, name)
		}
		data := secretData(obj)
		for key := range want[name] {
			if _, ok := data[key]; !ok {
				return nil, fmt.Errorf("Secret %s/%s has no key %q", ns, name, key)
			}
		}
		enc := make(map[string]string, len(data))
		for k, v := range data {
			enc[k] = base64.StdEncoding.EncodeToString(v)
		}
		b, err := json.Marshal(enc)
		if err != nil {
			return nil, err
		}
		out = append(out, secret{Name: name, Data: string(b)})
	}
	return out, nil
}

// workloadConfigMaps renders the ConfigMaps a workload refers to (env,
// envFrom, volumes) as the operator does: whole documents with only the
// name as metadata.
func workloadConfigMaps(w *edgeWorkload, ns string, objs *objects) ([]string, error) {
	want := refs{}
	spec := &w.Spec.Pod.Spec
	for _, c := range allContainers(spec) {
		for _, f := range c.EnvFrom {
			if f.ConfigMapRef != nil {
				want.add(f.ConfigMapRef.Name, f.ConfigMapRef.Optional, "")
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
				want.add(e.ValueFrom.ConfigMapKeyRef.Name, e.ValueFrom.ConfigMapKeyRef.Optional, e.ValueFrom.ConfigMapKeyRef.Key)
			}
		}
	}
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil {
			want.add(v.ConfigMap.Name, v.ConfigMap.Optional, "")
		}
	}
	var out []string
	for _, name := range sortedNames(want) {
		obj := objs.configMap(ns, name)
		if obj == nil {
			if want[name] == nil {
				continue
			}
			return nil, fmt.Errorf("ConfigMap %s/%s not found", ns, name)
		}
		for key := range want[name] {
			if _, ok := obj.Data[key]; !ok {
				return nil, fmt.Errorf("ConfigMap %s/%s has no key %q", ns, name, key)
			}
		}
		doc := configMapDoc{APIVersion: "v1", Kind: "ConfigMap", Data: obj.Data, BinaryData: obj.BinaryData}
		doc.Metadata.Name = name
		text, err := yaml.Marshal(&doc)
		if err != nil {
			return nil, err
		}
		out = append(out, string(text))
	}
	return out, nil
}

// configMapDoc is a ConfigMap as the operator renders it for a device:
// metadata holds only the name (and the null creationTimestamp its
// Kubernetes types write).
type configMapDoc struct {
	APIVersion string            `json:"apiVersion"`
	BinaryData map[string][]byte `json:"binaryData,omitempty"`
	Data       map[string]string `json:"data,omitempty"`
	Kind       string            `json:"kind"`
	Metadata   struct {
		CreationTimestamp *string `json:"creationTimestamp"`
		Name              string  `json:"name"`
	} `json:"metadata"`
}

// authFile is the .dockerconfigjson of a registry Secret, verbatim.
func authFile(ns, name string, objs *objects) (string, error) {
	obj := objs.secret(ns, name)
	if obj == nil {
		return "", fmt.Errorf("Secret %s/%s not found", ns, name)
	}
	v, ok := secretData(obj)[corev1.DockerConfigJsonKey]
	if !ok {
		return "", fmt.Errorf("Secret %s/%s has no key %s", ns, name, corev1.DockerConfigJsonKey)
	}
	return string(v), nil
}

// secretData is a Secret's data as the API server stores it: data, with
// stringData written over it.
func secretData(s *corev1.Secret) map[string][]byte {
	out := make(map[string][]byte, len(s.Data)+len(s.StringData))
	for k, v := range s.Data {
		out[k] = v
	}
	for k, v := range s.StringData {
		out[k] = []byte(v)
	}
	return out
}

func sortedNames(r refs) []string {
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
