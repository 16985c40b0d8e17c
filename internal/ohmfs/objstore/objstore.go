// Package objstore stores the objects of an ohmfs volume: immutable blocks
// and a few small control objects. The default backend is a local
// directory; s3:// (any S3-compatible store) is another backend behind the
// same interface.
package objstore

import (
	"context"
	"errors"
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
