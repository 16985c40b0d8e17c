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
		r, err := db.c.query(query)
		if err != nil {
			return err
		}
		defer r.close()
		for {
			ok, err := r.next()
			if err != nil || !ok {
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := r.scan(dest...); err != nil {
				return err
			}
			if err := fn(dest); err != nil {
				return err
			}
		}
	}

	inodes := make(map[Ino]*checkInode)
	var maxIno Ino
	var sumUsed uint64
	{
		var ino Ino
		var c checkInode
		err := each("SELECT ino, mode, nlink, parent, size, used FROM inodes", func([]any) error {
			cc := c
			inodes[ino] = &cc
			maxIno = max(maxIno, ino)
			sumUsed += c.used
			return nil
		}, &ino, &c.mode, &c.nlink, &c.parent, &c.size, &c.used)
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
