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
