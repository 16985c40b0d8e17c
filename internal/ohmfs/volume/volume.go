// Package volume manages ohmfs volumes as a whole: format, open with the
// single-writer lock, status, fsck, gc and destroy. A volume is named by a
// URL: a plain path (or file://path) is the embedded default, with blocks
// under that directory and the SQLite metadata beside them; s3://bucket/prefix
// comes with the S3 backend.
//
// Layout of a file volume:
//
//	<dir>/ohmfs.json      volume identity and settings (written last by Format)
//	<dir>/meta/meta.db    SQLite metadata (with -wal, -shm)
//	<dir>/blocks/...      immutable data blocks (objstore keys "blocks/...")
//	<dir>/lock            flock'ed by the one process that has it open; holds the Holder as JSON
package volume

import (
	"context"
	"errors"
	"time"

	"ohm/internal/ohmfs/blockstore"
	"ohm/internal/ohmfs/meta"
	"ohm/internal/ohmfs/objstore"
)

var errTODO = errors.New("volume: not implemented yet")

// DefaultCapacity is what statfs reports as the size of a volume unless
// Format is given another: 1 PiB, shown by df as 1.0P.
const DefaultCapacity = 1 << 50

// ErrNotVolume is returned (wrapped) for a location that holds no ohmfs volume.
var ErrNotVolume = errors.New("not an ohmfs volume")

// ErrBusy is returned (wrapped) by Open when another process has the volume open.
var ErrBusy = errors.New("volume is in use")

// FormatOptions tune Format.
type FormatOptions struct {
	Capacity uint64 // bytes reported by statfs; 0 means DefaultCapacity
}

// Format creates a new, empty volume at url. It refuses a location that
// already holds a volume or any other files.
func Format(ctx context.Context, url string, opts FormatOptions) error { return errTODO }

// Holder says who has a volume open; it is stored in the lock so that
// status can tell.
type Holder struct {
	PID        int       `json:"pid"`
	Mountpoint string    `json:"mountpoint,omitempty"`
	Since      time.Time `json:"since"`
}

// OpenOptions tune Open.
type OpenOptions struct {
	Mountpoint string // recorded in the Holder
	CacheBytes int64  // block cache bound; 0 for the default
}

// Volume is an open volume, held with the single-writer lock until Close.
type Volume struct {
	URL      string
	UUID     string
	Capacity uint64
	Objects  objstore.Store
	Blocks   *blockstore.Store
	Meta     *meta.DB
}

// Open opens the volume at url for writing. It fails with ErrBusy (naming
// the holder's pid and mountpoint) if another process has it open, and with
// ErrNotVolume if url holds no volume.
func Open(ctx context.Context, url string, opts OpenOptions) (*Volume, error) {
	return nil, errTODO
}

// Close commits the metadata, closes it and releases the lock.
func (v *Volume) Close(ctx context.Context) error { return errTODO }

// Status is what `ohm fs status` reports.
type Status struct {
	URL         string  `json:"url"`
	UUID        string  `json:"uuid"`
	Capacity    uint64  `json:"capacity_bytes"`
	Files       uint64  `json:"files"`      // live inodes
	UsedBytes   uint64  `json:"used_bytes"` // logical bytes files hold
	Blocks      uint64  `json:"blocks"`
	StoredBytes uint64  `json:"stored_bytes"` // bytes the blocks take in the store, compressed
	FreedBlocks uint64  `json:"freed_blocks"` // waiting for gc
	Mounted     bool    `json:"mounted"`
	Holder      *Holder `json:"holder,omitempty"`
}

// Inspect reports a volume's status. It works whether or not the volume is
// mounted (it reads the committed metadata only).
func Inspect(ctx context.Context, url string) (Status, error) { return Status{}, errTODO }

// Fsck checks a volume that is not mounted: the metadata's own invariants
// and that every referenced block exists in the store. It returns the
// problems found (none on a healthy volume).
func Fsck(ctx context.Context, url string) ([]meta.Problem, error) { return nil, errTODO }

// GCResult says what GC did.
type GCResult struct {
	DeletedBlocks uint64 `json:"deleted_blocks"`
	DeletedBytes  uint64 `json:"deleted_bytes"`
	KeptYoung     uint64 `json:"kept_young"` // unreferenced but younger than the grace period
}

// GC deletes blocks that nothing references and that were freed (or, for
// blocks never referenced, written) more than grace ago. A volume that is
// mounted is collected through its mount, not here: GC fails with ErrBusy.
func GC(ctx context.Context, url string, grace time.Duration) (GCResult, error) {
	return GCResult{}, errTODO
}

// Destroy removes the volume and all its data. It fails with ErrBusy if the
// volume is open.
func Destroy(ctx context.Context, url string) error { return errTODO }
