package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"ohm/internal/filecopy"
)

// tempPrefix starts the names of the file backend's temporary files. Keys
// may not use it, so a temp file is never mistaken for an object.
const tempPrefix = ".tmp-"

// FileStore is the local-directory backend: the object with key "a/b" is
// the file <root>/a/b. Put writes a temp file beside the target, fsyncs it
// and renames it into place, so an object is either whole or absent.
type FileStore struct {
	root string

	// write writes data to f; tests replace it to inject faults.
	write func(f *os.File, data []byte) error
}

// NewFile returns a FileStore rooted at dir. The directory need not exist
// yet: Put creates it and any parents on demand.
func NewFile(dir string) (*FileStore, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open object store %q: %w", dir, err)
	}
	return &FileStore{root: abs, write: writeAll}, nil
}

func writeAll(f *os.File, data []byte) error {
	_, err := f.Write(data)
	return err
}

// Root returns the directory the store lives in.
func (s *FileStore) Root() string { return s.root }

// String returns the store's directory.
func (s *FileStore) String() string { return s.root }

func (s *FileStore) path(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// Put stores data under key atomically and durably.
func (s *FileStore) Put(ctx context.Context, key string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := s.path(key)
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := s.put(p, data); err != nil {
		return fmt.Errorf("put %s in %s: %w", key, s.root, err)
	}
	return nil
}

func (s *FileStore) put(p string, data []byte) error {
	dir := filepath.Dir(p)
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if errors.Is(err, fs.ErrNotExist) {
		if err = mkdirAllSync(dir); err != nil {
			return err
		}
		f, err = os.CreateTemp(dir, tempPrefix+"*")
	}
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := s.write(f, data); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	ok = true
	return filecopy.SyncDir(dir)
}

// mkdirAllSync creates dir and its missing parents, fsyncing each parent
// whose entries changed so that the new directories survive a crash.
func mkdirAllSync(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAllSync(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // a concurrent Put made it
		}
		return err
	}
	return filecopy.SyncDir(parent)
}

// Get returns length bytes of key from off (length < 0: to the end). A
// range past the end of the object is cut short.
func (s *FileStore) Get(ctx context.Context, key string, off, length int64) ([]byte, error) {
	return s.GetBuf(ctx, key, off, length, func(n int) []byte { return make([]byte, n) })
}

// GetBuf is Get reading into a buffer of length n from alloc, so that the
// caller can reuse buffers (the block store's loads).
func (s *FileStore) GetBuf(ctx context.Context, key string, off, length int64, alloc func(n int) []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := s.path(key)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if off < 0 {
		return nil, fmt.Errorf("get %s: negative offset %d", key, off)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, s.notFound("get", key, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("get %s in %s: %w", key, s.root, ErrNotFound)
	}
	size := fi.Size()
	if off >= size {
		return []byte{}, nil
	}
	n := size - off
	if length >= 0 && length < n {
		n = length
	}
	buf := alloc(int(n))
	if _, err := f.ReadAt(buf, off); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // objects are immutable; this one was truncated
		}
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return buf, nil
}

func (s *FileStore) notFound(op, key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) { // ENOTDIR: a key below an existing object
		return fmt.Errorf("%s %s in %s: %w", op, key, s.root, ErrNotFound)
	}
	return fmt.Errorf("%s %s: %w", op, key, err)
}

// Head returns the size and modification time of key.
func (s *FileStore) Head(ctx context.Context, key string) (ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, err
	}
	p, err := s.path(key)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("head %s: %w", key, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return ObjectInfo{}, s.notFound("head", key, err)
	}
	if !fi.Mode().IsRegular() {
		return ObjectInfo{}, fmt.Errorf("head %s in %s: %w", key, s.root, ErrNotFound)
	}
	return ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Delete removes key; a missing key is not an error.
func (s *FileStore) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := s.path(key)
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s in %s: %w", key, s.root, err)
	}
	return nil
}

// List calls fn for every object whose key starts with prefix. Temp files
// are skipped.
func (s *FileStore) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	// Walk only the deepest directory the prefix names in full.
	dir := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		dir = prefix[:i]
	}
	start := s.root
	if dir != "" {
		if err := ValidateKey(dir); err != nil {
			return fmt.Errorf("list %q: %w", prefix, err)
		}
		start = filepath.Join(s.root, filepath.FromSlash(dir))
	}
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // the prefix has no objects, or one vanished
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted while we walked
		} else if err != nil {
			return err
		}
		return fn(ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
	})
	if err != nil {
		return fmt.Errorf("list %q in %s: %w", prefix, s.root, err)
	}
	return nil
}

// CleanTemp removes temp files (left by a crash during Put) whose
// modification time is more than olderThan ago.
func (s *FileStore) CleanTemp(ctx context.Context, olderThan time.Duration) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	n := 0
	err := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil || !fi.ModTime().Before(cutoff) {
			return nil
		}
		if err := os.Remove(p); err == nil {
			n++
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("clean temp files in %s: %w", s.root, err)
	}
	return n, nil
}
