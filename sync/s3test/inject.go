package s3test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// InjectKeys returns next with objects of the given keys (4 bytes each)
// added to every ListObjectsV2 answer for prefix (for any prefix when
// prefix is ""). versitygw stores objects as files and cleans or refuses
// hostile keys, so a hostile server is played by rewriting its answers.
//
// The keys travel URL-encoded (XML cannot carry a NUL), so the answer says
// EncodingType url, replacing the empty element versitygw sends (it ignores
// encoding-type): the server's own keys must then read the same encoded or
// not (no '%' or '+').
func InjectKeys(next http.RoundTripper, prefix string, keys []string) http.RoundTripper {
	return &injectKeys{next: next, prefix: prefix, keys: keys}
}

type injectKeys struct {
	next   http.RoundTripper
	prefix string
	keys   []string
}

func (ik *injectKeys) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := ik.next.RoundTrip(r)
	q := r.URL.Query()
	if err != nil || q.Get("list-type") != "2" || ik.prefix != "" && q.Get("prefix") != ik.prefix || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	body = bytes.Replace(body, []byte("<EncodingType></EncodingType>"), nil, 1)
	var extra strings.Builder
	if !bytes.Contains(body, []byte("<EncodingType>url</EncodingType>")) {
		extra.WriteString("<EncodingType>url</EncodingType>")
	}
	for _, k := range ik.keys {
		fmt.Fprintf(&extra, "<Contents><Key>%s</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>"+
			"<ETag>&quot;0a2a1cabd7b0c4b2b27b57a9b0f1e0b1&quot;</ETag><Size>4</Size><StorageClass>STANDARD</StorageClass></Contents>",
			url.QueryEscape(k))
	}
	body = bytes.Replace(body, []byte("</ListBucketResult>"), []byte(extra.String()+"</ListBucketResult>"), 1)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}
