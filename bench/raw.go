package main

import (
	"context"
	"flag"
	"io"
	"io/fs"
	"log"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// rawMain is `bench raw [-endpoint URL] [-concurrency N] put DIR BUCKET PREFIX`
// or `... get BUCKET PREFIX DIR`: the plainest minio-go loop, our ceiling.
func rawMain(args []string) {
	fl := flag.NewFlagSet("raw", flag.ExitOnError)
	endpoint := fl.String("endpoint", "", "S3 URL")
	concurrency := fl.Int("concurrency", 16, "parallel requests")
	fl.Parse(args)
	a := fl.Args()
	c, err := rawClient(*endpoint)
	if err != nil {
		log.Fatal(err)
	}
	switch {
	case len(a) == 4 && a[0] == "put":
		err = rawPut(c, a[1], a[2], a[3], *concurrency)
	case len(a) == 4 && a[0] == "get":
		err = rawGet(c, a[1], a[2], a[3], *concurrency)
	default:
		log.Fatal("usage: bench raw [-endpoint URL] [-concurrency N] put DIR BUCKET PREFIX | get BUCKET PREFIX DIR")
	}
	if err != nil {
		log.Fatal(err)
	}
}

func rawClient(endpoint string) (*minio.Client, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, err
	}
	return minio.New(u.Host, &minio.Options{
		Creds: credentials.NewStaticV4(accessKey, secretKey, ""), Secure: u.Scheme == "https", Region: "us-east-1",
	})
}

// parallel runs fn on every item from items with n workers and returns the
// first error.
func parallel(n int, items <-chan string, fn func(string) error) error {
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range items {
				if err := fn(it); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func rawPut(c *minio.Client, dir, bucket, prefix string, n int) error {
	paths := make(chan string, 64)
	var walkErr error
	go func() {
		defer close(paths)
		walkErr = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".") {
				paths <- p
			}
			return err
		})
	}()
	err := parallel(n, paths, func(p string) error {
		rel, _ := filepath.Rel(dir, p)
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		// Unsigned payload, as flotta-sync sends it: with the default (a
		// streaming SHA-256 signature over plain http) the "ceiling" did more
		// work per byte than the engine it bounds.
		_, err = c.PutObject(context.Background(), bucket, prefix+"/"+filepath.ToSlash(rel), f, st.Size(),
			minio.PutObjectOptions{NumThreads: uint(n), PartSize: 16 << 20, DisableContentSha256: true})
		return err
	})
	if err != nil {
		return err
	}
	return walkErr
}

func rawGet(c *minio.Client, bucket, prefix, dir string, n int) error {
	keys := make(chan string, 64)
	var listErr error
	go func() {
		defer close(keys)
		for obj := range c.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: prefix + "/", Recursive: true}) {
			if obj.Err != nil {
				listErr = obj.Err
				return
			}
			keys <- obj.Key
		}
	}()
	err := parallel(n, keys, func(key string) error {
		obj, err := c.GetObject(context.Background(), bucket, key, minio.GetObjectOptions{})
		if err != nil {
			return err
		}
		defer obj.Close()
		dst := filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(key, prefix+"/")))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		f, err := os.Create(dst)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, obj); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
	if err != nil {
		return err
	}
	return listErr
}

// seedBucket fills bucket/prefix with the small files of dir, for ingress runs.
func seedBucket(o options, srv *server, dir, bucket, prefix string) error {
	if err := makeFiles(dir, o.files, o.fileSize); err != nil {
		return err
	}
	return uploadDir(o, srv, dir, bucket, prefix)
}

// uploadDir puts every file of dir under bucket/prefix.
func uploadDir(o options, srv *server, dir, bucket, prefix string) error {
	if err := srv.makeBucket(bucket); err != nil {
		return err
	}
	c, err := srv.client()
	if err != nil {
		return err
	}
	return rawPut(c, dir, bucket, prefix, o.concurrency)
}
