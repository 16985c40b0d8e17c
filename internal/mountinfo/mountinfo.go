// Package mountinfo answers what is mounted where, from the kernel's
// mount table (/proc/thread-self/mountinfo): whether a path is a mount
// point, and the device, filesystem type and source of the mount on top
// of it. Only the table is read, never the path itself: stat-ing a dead
// FUSE mount hangs or fails, and a path a computer can write may hold a
// symlink.
//
// Paths are compared as the table spells them, after filepath.Clean: an
// absolute path with no symlinks names its mount point.
package mountinfo

import (
	"fmt"
	"io"
	"path/filepath"

	moby "github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Mount is one entry of the mount table.
type Mount struct {
	ID         int    // the mount's ID (reused after it is unmounted)
	Parent     int    // the ID of the mount it is mounted on
	Major      uint32 // the major of the device its files report (st_dev)
	Minor      uint32 // the minor of it; a FUSE mount's connection number
	Root       string // the directory of the filesystem mounted there
	Mountpoint string // where it is mounted
	Options    string // per-mount options (rw, nosuid, ...)
	FSType     string // type[.subtype], as "ext4" or "fuse.ohmfs"
	Source     string // the device or name it was mounted from
	SuperOpts  string // the filesystem's own (superblock) options
	Optional   string // propagation fields, as "shared:3 master:1"
}

// Dev is the mount's device number as stat reports it for its files.
func (m Mount) Dev() uint64 { return unix.Mkdev(m.Major, m.Minor) }

// Table is a mount table in the kernel's order: a mount comes after the
// one it is mounted on, so the mounts stacked at one mount point are
// listed bottom first.
type Table []Mount

// Read reads this thread's mount table.
func Read() (Table, error) {
	ms, err := moby.GetMounts(nil)
	if err != nil {
		return nil, fmt.Errorf("read the mount table: %w", err)
	}
	return fromMoby(ms), nil
}

// Parse reads a mount table in the format of /proc/self/mountinfo.
func Parse(r io.Reader) (Table, error) {
	ms, err := moby.GetMountsFromReader(r, nil)
	if err != nil {
		return nil, fmt.Errorf("parse the mount table: %w", err)
	}
	return fromMoby(ms), nil
}

func fromMoby(ms []*moby.Info) Table {
	t := make(Table, len(ms))
	for i, m := range ms {
		t[i] = Mount{
			ID: m.ID, Parent: m.Parent,
			Major: uint32(m.Major), Minor: uint32(m.Minor),
			Root: m.Root, Mountpoint: m.Mountpoint, Options: m.Options,
			FSType: m.FSType, Source: m.Source, SuperOpts: m.VFSOptions,
			Optional: m.Optional,
		}
	}
	return t
}

// Stack returns the mounts at path, bottom first (the last one is what
// a lookup of path reaches).
func (t Table) Stack(path string) []Mount {
	path = filepath.Clean(path)
	var stack []Mount
	for _, m := range t {
		if m.Mountpoint == path {
			stack = append(stack, m)
		}
	}
	return stack
}

// At returns the topmost mount at path, and whether there is one.
func (t Table) At(path string) (Mount, bool) {
	s := t.Stack(path)
	if len(s) == 0 {
		return Mount{}, false
	}
	return s[len(s)-1], true
}

// ByID returns the mount with ID id, and whether there is one.
func (t Table) ByID(id int) (Mount, bool) {
	for _, m := range t {
		if m.ID == id {
			return m, true
		}
	}
	return Mount{}, false
}

// Stack returns the mounts at path in this mount namespace, bottom first.
func Stack(path string) ([]Mount, error) {
	t, err := Read()
	if err != nil {
		return nil, err
	}
	return t.Stack(path), nil
}

// At returns the topmost mount at path in this mount namespace, and
// whether there is one.
func At(path string) (Mount, bool, error) {
	t, err := Read()
	if err != nil {
		return Mount{}, false, err
	}
	m, ok := t.At(path)
	return m, ok, nil
}

// ByID returns the mount with ID id (as statx's STATX_MNT_ID gives it)
// in this mount namespace, and whether there is one.
func ByID(id int) (Mount, bool, error) {
	t, err := Read()
	if err != nil {
		return Mount{}, false, err
	}
	m, ok := t.ByID(id)
	return m, ok, nil
}

// IsMountpoint reports whether something is mounted at path in this
// mount namespace. A table that cannot be read counts as no.
func IsMountpoint(path string) bool {
	_, ok, err := At(path)
	return err == nil && ok
}
