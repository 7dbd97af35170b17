// Package podman runs a device's workloads as Podman pods: it turns a workload
// into a Pod manifest carrying the /export volume, and plays, lists and removes
// pods through the podman v4 REST bindings. It knows nothing of S3 or gRPC.
package podman

// Workload is one workload of the device configuration.
type Workload struct {
	Name          string            // DNS-1123 label; also the pod name
	Namespace     string            //
	Labels        map[string]string //
	Annotations   map[string]string //
	Specification string            // YAML of a Kubernetes PodSpec
	// ConfigMaps are whole Kubernetes ConfigMap YAML documents the pod
	// refers to; they are played with it.
	ConfigMaps []string
	// AuthFile is a containers auth file (JSON) used for this workload's
	// image pulls only; empty for none. It is a credential.
	AuthFile string
	// Secrets are the device's secrets, which any workload may refer to
	// by name (env secretKeyRef, envFrom secretRef, secret volumes). Only
	// those the specification names are used.
	Secrets []Secret
}

// Secret is one of the device's secrets: its keys and their raw values.
// Values never reach logs, events, errors or manifests.
type Secret struct {
	Name string
	Data map[string][]byte
}

// State is a workload's lifecycle as reported in heartbeats.
type State string

const (
	Deploying State = "deploying"
	Running   State = "running"
	Crashed   State = "crashed"
	Stopped   State = "stopped"
)

// WorkloadStatus is the observed state of one workload.
type WorkloadStatus struct {
	Name    string `json:"name"`
	State   State  `json:"status"`
	Message string `json:"message,omitempty"`
	// PodID and ManifestHash identify the pod observed for the workload
	// (empty when there is none); they are not part of the heartbeat.
	PodID        string `json:"-"`
	ManifestHash string `json:"-"`
}

// Event is something worth telling the control plane ("info" or "warn").
type Event struct {
	Reason  string `json:"reason"`
	Message string `json:"message"`
	Type    string `json:"type"`
}
