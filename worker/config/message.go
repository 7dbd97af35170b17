// Package config is the device configuration message that flotta's control
// plane sends through yggd (directive "device"): its JSON model, parsing and
// validation. It knows nothing of gRPC, podman or S3 clients; the worker
// translates a validated Message into their inputs.
package config

import "encoding/json"

// Message is one configuration message. Only the fields the worker acts on
// are modelled; unknown fields are ignored when parsing, so they never make
// two messages differ.
type Message struct {
	DeviceID                    string        `json:"device_id,omitempty"`
	Version                     string        `json:"version,omitempty"`
	WorkloadsMonitoringInterval int64         `json:"workloads_monitoring_interval,omitempty"`
	Configuration               Configuration `json:"configuration"`
	Workloads                   []Workload    `json:"workloads,omitempty"`
	Secrets                     []Secret      `json:"secrets,omitempty"`
}

// Configuration holds the device-wide settings.
type Configuration struct {
	Heartbeat Heartbeat `json:"heartbeat"`
	Storage   *Storage  `json:"storage,omitempty"`
}

// DefaultHeartbeatPeriodSeconds is used when the message sets no period.
const DefaultHeartbeatPeriodSeconds = 60

// Heartbeat says how often the worker reports to the control plane.
type Heartbeat struct {
	// PeriodSeconds is the time between heartbeats; 0 means
	// DefaultHeartbeatPeriodSeconds.
	PeriodSeconds int64 `json:"period_seconds,omitempty"`
}

// Period returns the heartbeat period in seconds, defaults applied.
func (h Heartbeat) Period() int64 {
	if h.PeriodSeconds <= 0 {
		return DefaultHeartbeatPeriodSeconds
	}
	return h.PeriodSeconds
}

// Storage is where the device's data is synchronised to. A nil *Storage
// means the device has no storage and no data synchronisation.
type Storage struct {
	S3 *S3 `json:"s3,omitempty"`
}

// S3 is the object storage endpoint and credentials. AccessKeyID,
// SecretAccessKey and CABundle carry base64 of the real value, as flotta
// sends them; Decode them with S3.Credentials.
type S3 struct {
	BucketHost      string `json:"bucket_host,omitempty"`
	BucketPort      int64  `json:"bucket_port,omitempty"`
	BucketName      string `json:"bucket_name,omitempty"`
	BucketRegion    string `json:"bucket_region,omitempty"`
	AccessKeyID     string `json:"aws_access_key_id,omitempty"`
	SecretAccessKey string `json:"aws_secret_access_key,omitempty"`
	CABundle        string `json:"aws_ca_bundle,omitempty"`
}

// Workload is one workload to run as a pod.
type Workload struct {
	Name          string            `json:"name"`
	Namespace     string            `json:"namespace,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
	Specification string            `json:"specification"`
	Data          *Data             `json:"data,omitempty"`
	// ConfigMaps are whole Kubernetes ConfigMap YAML documents that the
	// workload's pod refers to (configMapKeyRef, configMapRef, configMap
	// volumes). They belong to this workload only. After Parse they are
	// sorted, since the control plane's order is not stable.
	ConfigMaps []string `json:"configmaps,omitempty"`
	// ImageRegistries holds the credentials for pulling this workload's
	// images.
	ImageRegistries *ImageRegistries `json:"imageRegistries,omitempty"`
}

// ImageRegistries is a workload's private registry configuration.
type ImageRegistries struct {
	// AuthFile is a containers auth file (a Docker config.json,
	// {"auths":{"<registry>":{"auth":"<base64 user:password>"}}}) as plain
	// JSON text. It is a credential: never log it.
	AuthFile string `json:"authFile,omitempty"`
}

// Data lists the directories of a workload's /export kept in sync with the
// bucket.
type Data struct {
	// Egress: Source is relative to /export, Target is a bucket prefix.
	Egress []DataPath `json:"egress,omitempty"`
	// Ingress: Source is a bucket prefix, Target is relative to /export.
	Ingress []DataPath `json:"ingress,omitempty"`
}

// DataPath is one synchronised pair. After Parse both paths are cleaned:
// relative, slash-separated, without "." or ".." components or trailing
// slashes.
type DataPath struct {
	Source string `json:"source"`
	Target string `json:"target"`
}

// Secret is a secret the control plane hands to the device's workloads
// (device-wide: any workload may refer to it by name). Data is kept as the
// compacted JSON the control plane sent: flotta sends a JSON string holding
// a JSON object that maps each key to the base64 of its value. Use Values
// to decode it. Data is never logged.
type Secret struct {
	Name string          `json:"name"`
	Data json.RawMessage `json:"data,omitempty"`
}
