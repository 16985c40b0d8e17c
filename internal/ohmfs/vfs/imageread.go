package vfs

import (
	"context"

	"ohm/internal/ohmfs/meta"
)

// Readahead of an image's packs (docs/performance.md, "cold read").
//
// A kernel filesystem reads a file sequentially through the loop device
// in requests of up to max_sectors_kb, a few in flight; each one that
// reaches a pack not yet cached waits for the pack to be read from the
// store and decompressed whole. The FUSE mount's own readahead does not
// apply (images are opened for direct I/O), so the image keeps its own:
// once reads arrive near where the last ones ended, the packs of the next
// imageReadahead bytes are loaded in the background.
const (
	imageReadahead = 32 << 20
	// imageReadSlack is how far from where the last reads ended a read
	// may start and still count as sequential: the loop device has
	// several requests in flight, so a sequential reader's requests
	// arrive a little out of order.
	imageReadSlack = 4 << 20
	// imageStreamRead is the smallest read that counts as part of a
	// stream: a filesystem's reads of its own metadata in between (16 KiB
	// btrfs nodes) do not end one.
	imageStreamRead = 128 << 10
)

// imageReadaheadLocked notes a read of [off, end) of image f and returns
// the range whose packs to prefetch, empty if none.
func (f *file) imageReadaheadLocked(off, end uint64) (from, to uint64) {
	if end-off < imageStreamRead {
		return 0, 0 // metadata and other small reads neither start nor break a stream
	}
	seq := f.raLast != 0 && off+imageReadSlack >= f.raLast && off <= f.raLast+imageReadSlack
	if !seq {
		f.raLast, f.raNext = end, 0 // a jump: start over from here
		return 0, 0
	}
	f.raLast = max(f.raLast, end)
	// Ask again only once half the window has been consumed.
	if f.raNext >= end+imageReadahead/2 {
		return 0, 0
	}
	from, to = max(end, f.raNext), end+imageReadahead
	f.raNext = to
	return from, to
}

// prefetchImage starts loading the packs of [from, to) of image ino.
func (fs *FS) prefetchImage(ctx context.Context, ino meta.Ino, from, to uint64) {
	exts, err := fs.m.Extents(ctx, ino, from/pageSize, (to+pageSize-1)/pageSize)
	if err != nil {
		return // readahead only: the read itself reports errors
	}
	var last uint64
	for _, e := range exts {
		if e.Block == last {
			continue
		}
		last = e.Block
		if !fs.b.Prefetch(e.Block) {
			return // every loader is busy: the next read asks again
		}
	}
}
