package meta

import (
	"context"
	"fmt"
)

// Check verifies the metadata's own invariants (every entry names a live
// inode, link counts match entries, directories form a tree, counters match
// the rows, chunks lie within their file) and returns what it finds wrong.
// Orphans (nlink 0) are not problems: the next mount purges them.
func (db *DB) Check(ctx context.Context) ([]Problem, error) {
	var probs []Problem
	err := db.read(func() error {
		var err error
		probs, err = db.check(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("check metadata: %w", err)
	}
	return probs, nil
}

type checkInode struct {
	layout  Layout
	mode    uint32
	nlink   uint32
	parent  Ino
	size    uint64
	used    uint64
	links   uint32 // entries naming it
	subdirs uint32 // entries in it that are directories
	entry   Ino    // the parent of (one of) its entries
	chunks  uint64 // sum of its chunks' used bytes
}

func (db *DB) check(ctx context.Context) ([]Problem, error) {
	var probs []Problem
	add := func(ino Ino, format string, args ...any) {
		probs = append(probs, Problem{Ino: ino, Detail: fmt.Sprintf(format, args...)})
	}
	each := func(query string, fn func(row []any) error, dest ...any) error {
		return db.c.each(query, nil, func(r *rows) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := r.scan(dest...); err != nil {
				return err
			}
			return fn(dest)
		})
	}

	inodes := make(map[Ino]*checkInode)
	var maxIno Ino
	var sumUsed uint64
	{
		var ino Ino
		var c checkInode
		err := each("SELECT ino, mode, nlink, parent, size, used, layout FROM inodes", func([]any) error {
			cc := c
			inodes[ino] = &cc
			maxIno = max(maxIno, ino)
			sumUsed += c.used
			return nil
		}, &ino, &c.mode, &c.nlink, &c.parent, &c.size, &c.used, &c.layout)
		if err != nil {
			return nil, fmt.Errorf("scan inodes: %w", err)
		}
	}
	if r := inodes[RootIno]; r == nil || !isDir(r.mode) {
		add(RootIno, "root directory missing or not a directory")
	}

	var maxCookie uint64
	{
		var parent, ino Ino
		var name string
		var cookie uint64
		err := each("SELECT parent, name, ino, cookie FROM dentries", func([]any) error {
			maxCookie = max(maxCookie, cookie)
			if cookie <= 2 {
				add(parent, "entry %q has cookie %d (must be > 2)", name, cookie)
			}
			if err := checkName(name); err != nil {
				add(parent, "entry %q has an invalid name: %v", name, err)
			}
			p := inodes[parent]
			switch {
			case p == nil:
				add(parent, "entry %q is in a missing directory", name)
			case !isDir(p.mode):
				add(parent, "entry %q is in a non-directory", name)
			}
			t := inodes[ino]
			if t == nil {
				add(parent, "entry %q names missing inode %d", name, ino)
				return nil
			}
			t.links++
			t.entry = parent
			if isDir(t.mode) && p != nil {
				p.subdirs++
			}
			return nil
		}, &parent, &name, &ino, &cookie)
		if err != nil {
			return nil, fmt.Errorf("scan entries: %w", err)
		}
	}

	{
		var ino Ino
		var idx, length, block, cused uint64
		var maxBlock uint64
		err := each("SELECT ino, idx, len, block_id, used FROM chunks", func([]any) error {
			maxBlock = max(maxBlock, block)
			t := inodes[ino]
			if t == nil {
				add(ino, "chunk %d belongs to a missing inode", idx)
				return nil
			}
			t.chunks += cused
			if t.layout == LayoutImage {
				add(ino, "chunk %d belongs to a device image", idx)
			}
			if length > ChunkSize {
				add(ino, "chunk %d is %d bytes long", idx, length)
			}
			if cused > length {
				add(ino, "chunk %d uses %d bytes but is only %d long", idx, cused, length)
			}
			if idx >= (1<<63)/ChunkSize || idx*ChunkSize+length > t.size {
				add(ino, "chunk %d (%d bytes) lies past the end of the file (size %d)", idx, length, t.size)
			}
			return nil
		}, &ino, &idx, &length, &block, &cused)
		if err != nil {
			return nil, fmt.Errorf("scan chunks: %w", err)
		}
		maxPack, err := db.checkExtents(inodes, add, each)
		if err != nil {
			return nil, err
		}
		maxBlock = max(maxBlock, maxPack)
		var reserved int64
		if _, err := db.c.queryRow("SELECT value FROM counters WHERE name = ?", []any{ctrBlockReserved}, &reserved); err != nil {
			return nil, fmt.Errorf("read counters: %w", err)
		}
		if maxBlock >= uint64(reserved) {
			add(0, "block id %d is not below the reserved block ids (%d)", maxBlock, reserved)
		}
	}

	{
		var ino Ino
		var name string
		err := each("SELECT ino, name FROM xattrs", func([]any) error {
			if inodes[ino] == nil {
				add(ino, "xattr %q belongs to a missing inode", name)
			}
			return nil
		}, &ino, &name)
		if err != nil {
			return nil, fmt.Errorf("scan xattrs: %w", err)
		}
	}

	for ino, t := range inodes {
		if t.used != t.chunks {
			add(ino, "used is %d but its chunks hold %d bytes", t.used, t.chunks)
		}
		if !isDir(t.mode) {
			if t.nlink != t.links {
				add(ino, "nlink is %d but %d entries name it", t.nlink, t.links)
			}
			continue
		}
		if want := 2 + t.subdirs; t.nlink != want {
			add(ino, "directory nlink is %d, want %d (2 + %d subdirectories)", t.nlink, want, t.subdirs)
		}
		if ino == RootIno {
			if t.links != 0 {
				add(ino, "root directory has %d entries naming it", t.links)
			}
			continue
		}
		if t.links != 1 {
			add(ino, "directory has %d entries naming it, want 1", t.links)
			continue
		}
		if t.entry != t.parent {
			add(ino, "directory's parent is %d but its entry is in %d", t.parent, t.entry)
		}
	}

	// Every directory must reach the root through its parents.
	reach := map[Ino]bool{RootIno: true}
	for ino, t := range inodes {
		if !isDir(t.mode) || t.links != 1 {
			continue
		}
		var path []Ino
		d, ok := ino, false
		for range len(inodes) + 1 {
			if r, seen := reach[d]; seen {
				ok = r
				break
			}
			path = append(path, d)
			p := inodes[d]
			if p == nil || !isDir(p.mode) {
				break
			}
			d = p.entry
		}
		for _, p := range path {
			reach[p] = ok
		}
		if !ok {
			add(ino, "directory is not reachable from the root")
		}
	}

	ctr := db.ctr
	if db.readOnly {
		var err error
		if ctr, _, err = loadCounters(db.c); err != nil {
			return nil, err
		}
	}
	if ctr.inodes != uint64(len(inodes)) {
		add(0, "inode counter is %d but there are %d inodes", ctr.inodes, len(inodes))
	}
	if ctr.usedBytes != sumUsed {
		add(0, "used bytes counter is %d but inodes use %d", ctr.usedBytes, sumUsed)
	}
	if ctr.nextIno <= uint64(maxIno) {
		add(0, "next inode number %d is not above the largest inode %d", ctr.nextIno, maxIno)
	}
	if ctr.nextCookie <= maxCookie {
		add(0, "next cookie %d is not above the largest cookie %d", ctr.nextCookie, maxCookie)
	}
	return probs, nil
}

// checkExtents checks the extent maps of device images and their packs:
// extents lie within their file and their pack, do not overlap, add up to
// their file's used bytes, and each pack's live count is the pages that
// extents of all files reference in it. It returns the largest pack id.
func (db *DB) checkExtents(inodes map[Ino]*checkInode, add func(Ino, string, ...any), each func(string, func([]any) error, ...any) error) (uint64, error) {
	type checkPack struct {
		pages, live, refs uint64
	}
	packs := make(map[uint64]*checkPack)
	var maxPack uint64
	{
		var id, pages, live uint64
		err := each("SELECT id, pages, live FROM packs", func([]any) error {
			packs[id] = &checkPack{pages: pages, live: live}
			maxPack = max(maxPack, id)
			if live == 0 {
				add(0, "pack %d is recorded but nothing references it", id)
			}
			if pages == 0 || pages > MaxExtentPages {
				add(0, "pack %d holds %d pages", id, pages)
			}
			return nil
		}, &id, &pages, &live)
		if err != nil {
			return 0, fmt.Errorf("scan packs: %w", err)
		}
	}
	var ino, prevIno Ino
	var page, n, block, bpage, prevEnd uint64
	err := each("SELECT ino, page, n, block, bpage FROM extents ORDER BY ino, page", func([]any) error {
		if ino != prevIno {
			prevIno, prevEnd = ino, 0
		}
		t := inodes[ino]
		switch {
		case t == nil:
			add(ino, "extent at page %d belongs to a missing inode", page)
			return nil
		case t.layout != LayoutImage:
			add(ino, "extent at page %d belongs to a file that is not a device image", page)
		}
		t.chunks += n * PageSize
		if n == 0 || n > MaxExtentPages {
			add(ino, "extent at page %d has %d pages", page, n)
		}
		if page < prevEnd {
			add(ino, "extent at page %d overlaps the one before it (up to page %d)", page, prevEnd)
		}
		prevEnd = page + n
		if page+n > pagesFor(t.size) {
			add(ino, "extent at page %d (%d pages) lies past the end of the file (size %d)", page, n, t.size)
		}
		p := packs[block]
		if p == nil {
			add(ino, "extent at page %d names pack %d, which is not recorded", page, block)
			return nil
		}
		p.refs += n
		if bpage+n > p.pages {
			add(ino, "extent at page %d reaches past the %d pages of pack %d", page, p.pages, block)
		}
		return nil
	}, &ino, &page, &n, &block, &bpage)
	if err != nil {
		return 0, fmt.Errorf("scan extents: %w", err)
	}
	for id, p := range packs {
		if p.live != p.refs {
			add(0, "pack %d counts %d live pages but extents reference %d", id, p.live, p.refs)
		}
	}
	return maxPack, nil
}
