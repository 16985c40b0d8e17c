package volume

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"ohm/internal/filecopy"
	"ohm/internal/ohmfs/blockstore"
	"ohm/internal/ohmfs/meta"
	"ohm/internal/ohmfs/replica"
)

// Fork makes a new file volume at dst, a copy of the file volume at src
// that copies no data (docs/checkpoints.md): its metadata is snap, a
// consistent copy of src's (vfs.XattrSnapshot of a mounted src, or a copy
// of a closed one's meta.db), which Fork moves into place, and its blocks
// are hard links to src's. Blocks are immutable files, never written in
// place, so the two volumes share their bytes on the host, each volume's
// metadata counts only its own references, and each one's garbage
// collector unlinks only its own links: deleting either volume, or
// collecting it, never frees what the other reads. The fork gets a uuid
// of its own.
//
// prepare runs on the fork's metadata before the blocks are linked, to
// drop what the fork does not keep (it should unlink and Purge); only
// blocks still referenced after it are linked.
func Fork(ctx context.Context, src, snap, dst string, prepare func(context.Context, *meta.DB) error) (err error) {
	if strings.Contains(src, "://") || strings.Contains(dst, "://") {
		return fmt.Errorf("fork volume %s: only file volumes can be forked", src)
	}
	sb, err := newFileBackend(src)
	if err != nil {
		return fmt.Errorf("fork volume %s: %w", src, err)
	}
	id, err := identityOf(ctx, src, sb)
	if err != nil {
		return fmt.Errorf("fork volume %s: %w", src, err)
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("fork volume %s: %s exists", src, dst)
	}
	db, err := newFileBackend(dst)
	if err != nil {
		return fmt.Errorf("fork volume %s: %w", src, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dst)
		}
	}()
	mp := db.metaPath("")
	if err := os.MkdirAll(filepath.Dir(mp), 0o755); err != nil {
		return fmt.Errorf("fork volume %s: %w", src, err)
	}
	if err := os.Rename(snap, mp); err != nil {
		return fmt.Errorf("fork volume %s: %w", src, err)
	}
	nid, err := newIdentity(id.Capacity)
	if err != nil {
		return fmt.Errorf("fork volume %s: %w", src, err)
	}
	m, err := meta.Open(ctx, mp, meta.Options{})
	if err != nil {
		return fmt.Errorf("fork volume %s: %w", src, err)
	}
	closeMeta := func() error { return m.Close(context.WithoutCancel(ctx)) }
	if err := m.SetSetting(ctx, "uuid", nid.UUID); err != nil {
		closeMeta()
		return fmt.Errorf("fork volume %s: %w", src, err)
	}
	if prepare != nil {
		if err := prepare(ctx, m); err != nil {
			closeMeta()
			return fmt.Errorf("fork volume %s: %w", src, err)
		}
	}
	if err := m.Commit(ctx); err != nil {
		closeMeta()
		return fmt.Errorf("fork volume %s: %w", src, err)
	}
	seen := map[uint64]bool{}
	err = m.ReferencedBlocks(ctx, func(bid uint64) error {
		if seen[bid] {
			return nil
		}
		seen[bid] = true
		return linkBlock(sb.dir, db.dir, bid)
	})
	if err != nil {
		closeMeta()
		return fmt.Errorf("fork volume %s: %w", src, err)
	}
	// Its first replica, as Format ships one.
	rep, err := replica.Start(ctx, m, db.replica(), replica.Options{})
	if err != nil {
		closeMeta()
		return fmt.Errorf("fork volume %s: %w", src, err)
	}
	err = closeMeta()
	if rerr := rep.Close(ctx); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("fork volume %s: %w", src, err)
	}
	if err := putIdentity(ctx, db.objects(), nid); err != nil {
		return fmt.Errorf("fork volume %s: %w", src, err)
	}
	return filecopy.SyncDir(db.dir)
}

// linkBlock hard-links block id of the volume directory src into dst.
func linkBlock(src, dst string, id uint64) error {
	key := filepath.FromSlash(blockstore.Key(id))
	from, to := filepath.Join(src, key), filepath.Join(dst, key)
	err := os.Link(from, to)
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(from); serr != nil {
			return fmt.Errorf("block %d is referenced but not stored: %w", id, serr)
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		err = os.Link(from, to)
	}
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("link block %d: %w", id, err)
	}
	return nil
}
