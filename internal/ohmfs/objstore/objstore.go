// Package objstore stores the objects of an ohmfs volume: immutable blocks
// and a few small control objects. The default backend is a local
// directory; s3:// (any S3-compatible store) is another backend behind the
// same interface.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) when an object does not exist.
var ErrNotFound = errors.New("object not found")

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// Store is an object store. Keys are slash-separated relative paths such as
// "blocks/0a/000000000000010a". Implementations are safe for concurrent use.
type Store interface {
	// Put stores data under key atomically: a reader sees the whole object
	// or none of it. The object is durable when Put returns.
	Put(ctx context.Context, key string, data []byte) error
	// Get returns length bytes from off (length < 0: to the end).
	Get(ctx context.Context, key string, off, length int64) ([]byte, error)
	// Head returns the object's size and modification time.
	Head(ctx context.Context, key string) (ObjectInfo, error)
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// List calls fn for every object whose key starts with prefix, in no
	// particular order, until fn returns an error (which List returns).
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// String names the store for messages, e.g. "/var/lib/ohm/volumes/demo".
	String() string
}

// TempCleaner is implemented by stores that can leave temporary objects
// behind after a crash (the file backend's temp files).
type TempCleaner interface {
	// CleanTemp removes temporary leftovers older than olderThan and
	// returns how many it removed.
	CleanTemp(ctx context.Context, olderThan time.Duration) (int, error)
}

// CleanTemp removes the crash leftovers of s older than olderThan, if s is
// a kind of store that can have any.
func CleanTemp(ctx context.Context, s Store, olderThan time.Duration) (int, error) {
	if c, ok := s.(TempCleaner); ok {
		return c.CleanTemp(ctx, olderThan)
	}
	return 0, nil
}

// Open returns the store named by url: a plain path or file://path is a
// local directory (created on first Put if missing); s3://bucket/prefix is
// an S3-compatible store.
func Open(ctx context.Context, url string) (Store, error) {
	scheme, rest, err := SplitURL(url)
	if err != nil {
		return nil, err
	}
	if scheme == SchemeS3 {
		return NewS3(ctx, url, S3Options{})
	}
	return NewFile(rest)
}

// The schemes of store URLs that SplitURL accepts.
const (
	SchemeFile = "file" // a local directory: a plain path or file://path
	SchemeS3   = "s3"   // s3://bucket/prefix
)

// SplitURL returns the scheme of a store URL (SchemeFile for a plain path)
// and what follows "scheme://" (the directory of a file URL). It fails, in
// one line naming url, for a scheme no backend serves and an empty path.
func SplitURL(url string) (scheme, rest string, err error) {
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		scheme, rest = SchemeFile, url
	}
	switch scheme {
	case SchemeFile:
		if rest == "" {
			return "", "", fmt.Errorf("open object store %q: empty path", url)
		}
		return scheme, rest, nil
	case SchemeS3:
		return scheme, rest, nil
	default:
		return "", "", fmt.Errorf("open object store %q: unsupported scheme %q (want a path, file:// or s3://)", url, scheme)
	}
}

// ValidateKey reports whether key is a usable object key: a relative,
// slash-separated path with no empty, "." or ".." segments.
func ValidateKey(key string) error {
	if key == "" {
		return errors.New("empty object key")
	}
	if strings.HasPrefix(key, "/") {
		return fmt.Errorf("object key %q is absolute", key)
	}
	if strings.ContainsRune(key, 0) {
		return fmt.Errorf("object key %q contains NUL", key)
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("object key %q has an empty segment", key)
		case seg == "." || seg == "..":
			return fmt.Errorf("object key %q has a %q segment", key, seg)
		case strings.HasPrefix(seg, tempPrefix):
			return fmt.Errorf("object key %q uses the reserved prefix %q", key, tempPrefix)
		}
	}
	return nil
}
