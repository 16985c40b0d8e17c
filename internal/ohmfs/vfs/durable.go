package vfs

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"syscall"

	"ohm/internal/ohmfs/meta"
)

// XattrDurableRanges names the byte ranges of a device image whose writes
// are durable when they are acknowledged (docs/block-layout.md,
// "Flushes"): a write that overlaps one returns only once it, and every
// write acknowledged before it, is durable, as if a flush had followed it.
//
// It is what lets a kernel filesystem whose commit record has a fixed
// place (btrfs's superblocks) run without flush requests: the log keeps
// the image's writes in the order they were acknowledged, so a durable
// commit record is never without the writes it points at, and the record
// itself costs one fdatasync of the log, not the two flushes and the
// round trips of a flush before it and a forced unit access after it.
//
// The value is a comma-separated list of OFFSET+LENGTH, in bytes, set on
// an image (as root: trusted namespace) and committed before setxattr
// returns, so that a filesystem mounted on the strength of it never runs
// on an ohmfs that does not know it. Removing it ends the rule.
const XattrDurableRanges = "trusted.ohmfs.durable"

// maxDurableRanges bounds the list; a filesystem has a few commit blocks.
const maxDurableRanges = 16

// byteRange is [start, end) of a file.
type byteRange struct{ start, end uint64 }

// parseDurableRanges parses XattrDurableRanges's value.
func parseDurableRanges(v string) ([]byteRange, error) {
	var rs []byteRange
	for _, part := range strings.Split(v, ",") {
		off, n, ok := strings.Cut(strings.TrimSpace(part), "+")
		if !ok {
			return nil, fmt.Errorf("%q is not OFFSET+LENGTH", part)
		}
		o, err := strconv.ParseUint(off, 10, 63)
		if err != nil {
			return nil, fmt.Errorf("offset %q: %w", off, err)
		}
		l, err := strconv.ParseUint(n, 10, 63)
		if err != nil || l == 0 || o+l > math.MaxInt64 {
			return nil, fmt.Errorf("length %q is not a positive size", n)
		}
		rs = append(rs, byteRange{o, o + l})
	}
	if len(rs) > maxDurableRanges {
		return nil, fmt.Errorf("%d ranges; at most %d", len(rs), maxDurableRanges)
	}
	return rs, nil
}

// overlapsDurable reports whether [off, end) touches one of f's durable
// ranges, loading them from meta the first time (f locked).
func (fs *FS) overlapsDurable(ctx context.Context, f *file, off, end uint64) (bool, error) {
	if !f.durableLoaded {
		v, err := fs.m.GetXattr(ctx, f.ino, XattrDurableRanges)
		switch {
		case errors.Is(err, syscall.ENODATA):
			f.durable = nil
		case err != nil:
			return false, err
		default:
			if f.durable, err = parseDurableRanges(string(v)); err != nil {
				return false, fmt.Errorf("inode %d: %s: %v: %w", f.ino, XattrDurableRanges, err, syscall.EIO)
			}
		}
		f.durableLoaded = true
	}
	for _, r := range f.durable {
		if off < r.end && r.start < end {
			return true, nil
		}
	}
	return false, nil
}

// setDurableRanges handles a write of XattrDurableRanges: only on an
// image, committed before it returns.
func (fs *FS) setDurableRanges(ctx context.Context, ino meta.Ino, value []byte, flags uint32) error {
	rs, err := parseDurableRanges(string(value))
	if err != nil {
		return syscall.EINVAL
	}
	f, err := fs.lockFile(ctx, ino)
	if err != nil {
		return err
	}
	if !f.image {
		fs.unlockFile(f)
		return syscall.EINVAL
	}
	err = fs.m.SetXattr(ctx, ino, XattrDurableRanges, value, flags)
	if err == nil {
		f.durable, f.durableLoaded = rs, true
	}
	fs.unlockFile(f)
	if err != nil {
		return err
	}
	return fs.commit(ctx)
}

// removeDurableRanges handles a removal of XattrDurableRanges.
func (fs *FS) removeDurableRanges(ctx context.Context, ino meta.Ino) error {
	f, err := fs.lockFile(ctx, ino)
	if err != nil {
		return err
	}
	err = fs.m.RemoveXattr(ctx, ino, XattrDurableRanges)
	if err == nil {
		f.durable, f.durableLoaded = nil, true
	}
	fs.unlockFile(f)
	return err
}

// DurableWrite reports whether a write of n bytes at off through fh was
// one of a durable range (XattrDurableRanges): the FUSE layer then runs
// what it runs after an fsync (the replica's flush of --fsync=replica).
func (fs *FS) DurableWrite(ctx context.Context, fh Handle, off int64, n int) bool {
	h := fs.handle(fh)
	if h == nil || h.f == nil || off < 0 || n <= 0 {
		return false
	}
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if !h.f.image {
		return false
	}
	ok, err := fs.overlapsDurable(ctx, h.f, uint64(off), uint64(off)+uint64(n))
	return ok && err == nil
}
