// Package s3wire speaks the S3 requests the sync engine builds by hand,
// in one place: ListObjectsV2 pages (Lister), object downloads (Getter),
// MinIO's bucket notification stream (Listen), their retries, and the
// engine-level kinds of their errors and minio-go's (Classify, Kind).
//
// Every request is signed by minio-go's V4 signer, addressed path-style or
// virtual-host as minio-go addresses it, and sent through the engine's
// transport (so its limits, timeouts and request counting apply).
package s3wire
