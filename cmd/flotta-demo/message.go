package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// buildMessage writes the seed document's Kubernetes objects, pointed at
// the demo's S3 server, and turns them into a configuration message with
// flotta-config, as the control plane would.
func buildMessage(o options, s3 *s3Server, withPodman bool) (string, error) {
	dir := filepath.Join(o.workDir, "k8s")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	image := "localhost/flotta-busybox:test"
	if !withPodman {
		image = "quay.io/example/os-stats:v1" // not run: podman is not usable here
	}
	objects := fmt.Sprintf(`apiVersion: management.project-flotta.io/v1alpha1
kind: EdgeDevice
metadata:
  name: demo-device
  namespace: edgedevice-namespace
spec:
  requestTime: "2021-10-19T18:13:04Z"
  storage:
    s3:
      configMapName: s3configmap-name
      secretName: s3secret-name
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: s3configmap-name
  namespace: edgedevice-namespace
data:
  BUCKET_HOST: http://127.0.0.1
  BUCKET_NAME: %s
  BUCKET_PORT: "%d"
  BUCKET_REGION: us-east-1
---
apiVersion: v1
kind: Secret
metadata:
  name: s3secret-name
  namespace: edgedevice-namespace
type: Opaque
stringData:
  AWS_ACCESS_KEY_ID: %s
  AWS_SECRET_ACCESS_KEY: %s
---
apiVersion: management.project-flotta.io/v1alpha1
kind: EdgeWorkload
metadata:
  name: %s
  namespace: edgedevice-namespace # the operator sends a device only its own namespace's workloads
  labels:
    dc: home
spec:
  data:
    egress:
      - source: stats
        target: statistics
    ingress:
      - source: remote/data
        target: local/download/data
  type: pod
  pod:
    spec:
      containers:
        - name: stats-collector
          image: %s
          imagePullPolicy: Never
          command: ["sh", "-c", "mkdir -p /export/stats; i=0; while true; do i=$((i+1)); cat /proc/loadavg > /export/stats/loadavg-$i.txt; sleep 4; done"]
`, bucket, s3.Port, accessKey, secretKey, workload, image)
	objPath := filepath.Join(dir, "device.yaml")
	if err := os.WriteFile(objPath, []byte(objects), 0o600); err != nil {
		return "", err
	}
	msgDir := filepath.Join(o.workDir, "messages")
	if err := os.MkdirAll(msgDir, 0o755); err != nil {
		return "", err
	}
	msgPath := filepath.Join(msgDir, "demo-device.json")
	cmd := exec.Command(filepath.Join(o.binDir, "flotta-config"), "-version", "1", "-heartbeat", "5", "-monitor", "5", "-o", msgPath, objPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("flotta-config: %w: %s", err, out)
	}
	return msgPath, nil
}
