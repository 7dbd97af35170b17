package s3wire

import (
	"bytes"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// page is one decoded ListObjectsV2 response.
type page struct {
	objects   []Entry
	truncated bool
	next      string // NextContinuationToken
}

var (
	contentsOpen  = []byte("<Contents>")
	contentsClose = []byte("</Contents>")
)

// parsePage decodes a ListBucketResult. Markup cannot occur inside the text
// of an element (S3 escapes '<' and '&'), so every tag found by searching the
// bytes is a tag; the order of elements is not relied on.
func parsePage(b []byte) (page, error) {
	if !bytes.Contains(b, []byte("<ListBucketResult")) {
		return page{}, fmt.Errorf("%w: no ListBucketResult", errMalformed)
	}
	var (
		p    page
		rest = b    // what follows the last Contents
		top  []byte // b without the Contents elements: where the page's own fields are
	)
	for {
		i := bytes.Index(rest, contentsOpen)
		if i < 0 {
			top = append(top, rest...)
			break
		}
		top = append(top, rest[:i]...)
		body := rest[i+len(contentsOpen):]
		j := bytes.Index(body, contentsClose)
		if j < 0 {
			return page{}, fmt.Errorf("%w: unterminated Contents", errMalformed)
		}
		o, err := parseObject(body[:j])
		if err != nil {
			return page{}, err
		}
		p.objects = append(p.objects, o)
		rest = body[j+len(contentsClose):]
	}
	p.truncated = string(element(top, "IsTruncated")) == "true"
	p.next = unescape(element(top, "NextContinuationToken"))
	if p.truncated && p.next == "" {
		return page{}, fmt.Errorf("%w: truncated without a continuation token", errMalformed)
	}
	if string(element(top, "EncodingType")) == "url" {
		for i := range p.objects {
			k, err := url.QueryUnescape(p.objects[i].Key)
			if err != nil {
				return page{}, fmt.Errorf("%w: key %q: %v", errMalformed, p.objects[i].Key, err)
			}
			p.objects[i].Key = k
		}
	}
	return p, nil // keys are checked by the caller, one at a time (keys.Rel)
}

// parseObject decodes the inside of one Contents element.
func parseObject(b []byte) (Entry, error) {
	key := element(b, "Key")
	if key == nil {
		return Entry{}, fmt.Errorf("%w: an entry without a Key", errMalformed)
	}
	o := Entry{Key: unescape(key), ETag: strings.Trim(unescape(element(b, "ETag")), `"`)}
	size, err := strconv.ParseInt(string(element(b, "Size")), 10, 64)
	if err != nil || size < 0 {
		return Entry{}, fmt.Errorf("%w: key %q: size %q", errMalformed, o.Key, element(b, "Size"))
	}
	o.Size = size
	if lm := element(b, "LastModified"); lm != nil {
		if o.LastModified, err = time.Parse(time.RFC3339Nano, string(lm)); err != nil {
			return Entry{}, fmt.Errorf("%w: key %q: LastModified %q", errMalformed, o.Key, lm)
		}
	}
	return o, nil
}

// element returns the text of the first element named name in b, nil when
// there is none (an empty element gives an empty, non-nil slice).
func element(b []byte, name string) []byte {
	open := "<" + name + ">"
	i := bytes.Index(b, []byte(open))
	if i < 0 {
		if bytes.Contains(b, []byte("<"+name+"/>")) {
			return []byte{}
		}
		return nil
	}
	b = b[i+len(open):]
	j := bytes.Index(b, []byte("</"+name+">"))
	if j < 0 {
		return nil
	}
	return b[:j:j]
}

// unescape replaces XML's character and entity references in text.
func unescape(b []byte) string {
	i := bytes.IndexByte(b, '&')
	if i < 0 {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b))
	for i >= 0 {
		sb.Write(b[:i])
		b = b[i:]
		end := bytes.IndexByte(b, ';')
		if end < 0 {
			break // not a reference: kept as it is
		}
		if r, ok := reference(string(b[1:end])); ok {
			sb.WriteRune(r)
			b = b[end+1:]
		} else {
			sb.WriteByte('&')
			b = b[1:]
		}
		i = bytes.IndexByte(b, '&')
	}
	sb.Write(b)
	return sb.String()
}

func reference(name string) (rune, bool) {
	switch name {
	case "amp":
		return '&', true
	case "lt":
		return '<', true
	case "gt":
		return '>', true
	case "quot":
		return '"', true
	case "apos":
		return '\'', true
	}
	if len(name) < 2 || name[0] != '#' {
		return 0, false
	}
	base, digits := 10, name[1:]
	if digits[0] == 'x' {
		base, digits = 16, digits[1:]
	}
	n, err := strconv.ParseUint(digits, base, 32)
	if err != nil || !utf8.ValidRune(rune(n)) {
		return 0, false
	}
	return rune(n), true
}
