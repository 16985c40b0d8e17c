package computer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"ohm/internal/sandbox"
)

// MaxDiskSizeMB bounds a root disk's size (1 PiB): far beyond any host,
// and small enough that sizes in bytes never overflow.
const MaxDiskSizeMB = 1 << 30

// Resize grows computer name's root disk to diskSizeMB. A running
// computer grows at once (the image, the loop device's capacity, then
// ext4 online), so df inside shows the new size as Resize returns; a
// stopped one grows at its next start. Shrinking is refused, and so is a
// size whose growth the host could not give with every other root disk
// filled (as at create: checkDiskRoom).
func (m *Manager) Resize(ctx context.Context, name string, diskSizeMB int) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	unlock := m.lock(name)
	defer unlock()
	rec, err := m.reg.get(ctx, name)
	if err != nil {
		return err
	}
	if rec, err = m.reapIfDead(ctx, rec); err != nil {
		return err
	}
	if rec.State == StateCreating {
		return statef("computer %q is still being created", name)
	}
	old := rec.DiskSizeMB
	switch {
	case diskSizeMB < old:
		return invalidf("computer %q has a %d MB root disk, which can grow but not shrink to %d MB", name, old, diskSizeMB)
	case diskSizeMB > MaxDiskSizeMB:
		return invalidf("invalid disk size %d MB: must be at most %d MB", diskSizeMB, MaxDiskSizeMB)
	case diskSizeMB == old:
		return nil
	}
	// The growth is promised under m.mu, as a create's disk is, so that
	// two of them at once cannot both count the same free space.
	m.mu.Lock()
	recs, err := m.reg.list(ctx)
	if err == nil {
		err = m.checkGrowRoom(recs, name, old, diskSizeMB)
	}
	if err == nil {
		err = m.reg.setDiskSize(ctx, name, diskSizeMB)
	}
	m.mu.Unlock()
	if err != nil {
		return err
	}
	if err := m.grow(ctx, rec, diskSizeMB); errors.Is(err, sandbox.ErrGrowAtStart) {
		// The image has grown and the size is recorded: the filesystem
		// follows at the next start, and the error says so.
		return &Error{Code: CodeState, Msg: fmt.Sprintf("the root disk of %q is now %d MB, but this host cannot grow ext4 while it is mounted (its root lacks CAP_SYS_RESOURCE): df shows the new size after a stop and start", name, diskSizeMB)}
	} else if err != nil {
		if rerr := m.reg.setDiskSize(context.WithoutCancel(ctx), name, old); rerr != nil {
			m.logf("resize %s: put the recorded size back: %v", name, rerr)
		}
		return fmt.Errorf("resize %s: %w", name, err)
	}
	return nil
}

// grow grows rec's root disk to sizeMB: now if it is mounted (the
// computer runs), otherwise the image only or nothing, and the start that
// mounts it grows the filesystem.
func (m *Manager) grow(ctx context.Context, rec Record, sizeMB int) error {
	spec := m.spec(rec, "")
	if !spec.DiskMounted {
		return sandbox.GrowDisk(ctx, spec, sizeMB)
	}
	if rec.State != StateRunning {
		return nil // openRoot grows it at the next start
	}
	d, err := m.heldRoot(ctx, rec.Name)
	if err != nil {
		return err
	}
	if d == nil {
		return fmt.Errorf("the root disk of running computer %q is not mounted", rec.Name)
	}
	return m.growOnline(ctx, rec.Name, d, int64(sizeMB)<<20)
}

// checkGrowRoom refuses to grow computer name's root disk from oldMB to
// newMB unless the growth fits where a new disk of that many MB would
// (checkDiskRoom): every root disk filled at once must leave the
// workspaces' reserve.
func (m *Manager) checkGrowRoom(recs []Record, name string, oldMB, newMB int) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Join(m.dataDir, "computers"), &st); err != nil {
		return fmt.Errorf("check free space in %s: %w", m.dataDir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	var promised, used int64
	for _, r := range recs {
		promised += int64(r.DiskSizeMB) << 20
		used += m.rootOccupied(r)
	}
	left := free + used - workspaceReserve - promised
	if int64(newMB-oldMB) <= left>>20 {
		return nil
	}
	return invalidf("growing the root disk of %q from %d MB to %d MB does not fit on the host: %s has %d MB free, the root disks of %d computers may still take %d MB of it and %d MB stay reserved for workspaces, which leaves %d MB",
		name, oldMB, newMB, m.dataDir, free>>20, len(recs), max(promised-used, 0)>>20, workspaceReserve>>20, max(left, 0)>>20)
}

// setDiskSize records name's root disk size.
func (r *registry) setDiskSize(ctx context.Context, name string, sizeMB int) error {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	res, err := r.db.ExecContext(ctx, `UPDATE computers SET disk_size_mb = ?, updated_at = ? WHERE name = ?`, sizeMB, now, name)
	if err != nil {
		return fmt.Errorf("set disk size of %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound(name)
	}
	return nil
}
