package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/minio/minio-go/v7"

	"github.com/project-flotta/flotta-device-worker/sync/s3server"
)

// s3Server is the demo's versitygw.
type s3Server struct {
	*s3server.Server
	client *minio.Client
}

func startS3(ctx context.Context, o options) (*s3Server, error) {
	logf, err := os.Create(filepath.Join(o.workDir, "versitygw.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the server has its own descriptor
	srv, err := s3server.StartVersitygw(s3server.Options{
		Binary: filepath.Join(o.binDir, "versitygw"),
		Dir:    filepath.Join(o.workDir, "s3"),
		Access: accessKey, Secret: secretKey,
		Buckets: []string{bucket},
		Log:     logf,
	})
	if err != nil {
		return nil, err
	}
	s := &s3Server{Server: srv}
	if s.client, err = srv.Client(); err != nil {
		srv.Stop()
		return nil, err
	}
	return s, nil
}

func (s *s3Server) stop() { s.Stop() }

// keys lists the objects under prefix.
func (s *s3Server) keys(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	for obj := range s.client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, obj.Err
		}
		keys = append(keys, obj.Key)
	}
	return keys, nil
}

func (s *s3Server) put(ctx context.Context, key, content string) error {
	_, err := s.client.PutObject(ctx, bucket, key, strings.NewReader(content), int64(len(content)), minio.PutObjectOptions{})
	return err
}
