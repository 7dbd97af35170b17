package s3wire

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/s3utils"
	"github.com/minio/minio-go/v7/pkg/signer"
)

// emptySHA256 is the SHA-256 of an empty body, signed as the payload hash
// (Ceph RGW refuses a request without x-amz-content-sha256).
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// addressing is how minio-go's makeTargetURL, with BucketLookupAuto,
// addresses requests to one endpoint: on an AWS endpoint the host is the
// region's (s3.<region>.amazonaws.com) and the bucket goes in the host
// (virtual-host style, as on Google's and Aliyun's); elsewhere requests are
// path-style on the endpoint's host. What depends on the endpoint alone is
// worked out once: minio-go's regular expressions cost more than signing.
type addressing struct {
	once    sync.Once
	aws     bool // the host is the region's
	virtual bool // the bucket goes in the host (unless https and a dotted bucket)
}

// url is the URL of key in bucket (key "": the bucket itself) with the
// already encoded query rawQuery.
func (a *addressing) url(endpoint *url.URL, bucket, key, region, rawQuery string) (*url.URL, error) {
	a.once.Do(func() {
		a.aws = s3utils.IsAmazonEndpoint(*endpoint) && !s3utils.IsAmazonFIPSEndpoint(*endpoint) &&
			!s3utils.IsAmazonPrivateLinkEndpoint(*endpoint)
		// s3utils.IsVirtualHostSupported without its test of the bucket.
		a.virtual = s3utils.IsVirtualHostSupported(*endpoint, "")
	})
	host := endpoint.Host
	if a.aws {
		host = awsHost(region)
	}
	scheme := endpoint.Scheme
	if h, p, err := net.SplitHostPort(host); err == nil && (scheme == "http" && p == "80" || scheme == "https" && p == "443") {
		host = h
		if ip := net.ParseIP(h); ip != nil && ip.To4() == nil {
			host = "[" + h + "]"
		}
	}
	var s strings.Builder
	s.Grow(len(scheme) + len(host) + len(bucket) + 3*len(key) + len(rawQuery) + 8)
	s.WriteString(scheme + "://")
	if a.virtual && !(scheme == "https" && strings.Contains(bucket, ".")) {
		s.WriteString(bucket + "." + host + "/")
	} else {
		s.WriteString(host + "/" + bucket + "/")
	}
	if key != "" {
		s.WriteString(s3utils.EncodePath(key))
	}
	if rawQuery != "" {
		s.WriteString("?" + rawQuery)
	}
	return url.Parse(s.String())
}

// awsHost is the S3 host of an AWS region, as minio-go's table has it for
// the commercial and China partitions (us-east-1 when unknown).
func awsHost(region string) string {
	switch {
	case region == "" || region == "us-east-1":
		return "s3.us-east-1.amazonaws.com"
	case strings.HasPrefix(region, "cn-"):
		return "s3." + region + ".amazonaws.com.cn"
	default:
		return "s3." + region + ".amazonaws.com"
	}
}

// signV4 signs req (without a body) with minio-go's V4 signer.
func signV4(req *http.Request, accessKey, secretKey, region string) *http.Request {
	req.Header.Set("X-Amz-Content-Sha256", emptySHA256)
	return signer.SignV4(*req, accessKey, secretKey, "", region)
}

// regions remembers, per bucket, the region a server named when it refused
// a request signed for another one, ahead of what the caller's Region says
// (minio-go keeps it in its bucket location cache the same way).
type regions struct{ m sync.Map }

// of is bucket's region: the one learned, else lookup's answer.
func (r *regions) of(ctx context.Context, bucket string, lookup func(context.Context, string) (string, error)) (string, error) {
	if v, ok := r.m.Load(bucket); ok {
		return v.(string), nil
	}
	if lookup == nil {
		return "us-east-1", nil
	}
	return lookup(ctx, bucket)
}

// learn reports whether err is the server's refusal of a request signed
// for region (or sent to its endpoint) when the bucket is in another region
// it names, and then remembers that region: the request is worth sending
// again with it, as minio-go does for AuthorizationHeaderMalformed,
// InvalidRegion and AccessDenied, and as AWS asks with PermanentRedirect.
func (r *regions) learn(bucket, region string, err error) (string, bool) {
	var er minio.ErrorResponse
	if !errors.As(err, &er) || er.Region == "" || er.Region == region {
		return "", false
	}
	switch er.Code {
	case "AuthorizationHeaderMalformed", "InvalidRegion", "AccessDenied", "PermanentRedirect":
	default:
		if er.StatusCode != http.StatusMovedPermanently {
			return "", false
		}
	}
	r.m.Store(bucket, er.Region)
	return er.Region, true
}
