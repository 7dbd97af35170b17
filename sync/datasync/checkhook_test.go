package datasync

import (
	"context"

	"github.com/minio/minio-go/v7"
)

// CheckDir is flotta-sync check's comparison of dir with bucket/prefix
// (sync/check): what is not a match, and how many matches were by size
// alone. sync/check imports this package, so an internal test cannot import
// it: checkhook_ext_test.go (package datasync_test) sets CheckDir.
var CheckDir func(ctx context.Context, client *minio.Client, dir, bucket, prefix string) (notMatching []string, sizeOnly int64, err error)
