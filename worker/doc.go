// Package worker is the yggdrasil side of the device agent. It serves
// yggd's Worker service, accepts configuration messages (directive
// "device"), persists the last good one, applies it in the background
// through two small interfaces (Workloads for podman, DataSync for the S3
// synchroniser), sends heartbeats through the Dispatcher, and removes
// everything when the device is unregistered.
package worker
