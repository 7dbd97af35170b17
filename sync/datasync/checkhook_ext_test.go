package datasync_test

import (
	"context"

	"github.com/minio/minio-go/v7"

	"github.com/project-flotta/flotta-device-worker/sync/check"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
)

func init() {
	datasync.CheckDir = func(ctx context.Context, client *minio.Client, dir, bucket, prefix string) ([]string, int64, error) {
		var notMatching []string
		sum, err := check.Run(ctx, client, check.Options{Dir: dir, Bucket: bucket, Prefix: prefix}, func(r check.Result) {
			if r.Kind != check.Match {
				notMatching = append(notMatching, string(r.Kind)+" "+r.Path+" "+r.Detail)
			}
		})
		if err == nil && !sum.Equal() && len(notMatching) == 0 {
			notMatching = append(notMatching, "summary not equal")
		}
		return notMatching, sum.SizeOnly, err
	}
}
