package vfs

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSpaceGuardAdmit(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name           string
		avail, reserve uint64
		n, pending     uint64
		freeErr        error
		wantENOSPC     bool
	}{
		{name: "plenty", avail: 100 * mib, reserve: 10 * mib, n: mib},
		{name: "exactly at the reserve", avail: 11 * mib, reserve: 10 * mib, n: mib},
		{name: "one byte into the reserve", avail: 11 * mib, reserve: 10 * mib, n: mib + 1, wantENOSPC: true},
		{name: "pending dirty data counts", avail: 20 * mib, reserve: 10 * mib, n: mib, pending: 10 * mib, wantENOSPC: true},
		{name: "host already below the reserve", avail: 5 * mib, reserve: 10 * mib, n: 1, wantENOSPC: true},
		{name: "unknown free space admits", reserve: 10 * mib, n: mib, freeErr: errors.New("statfs failed")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := spaceGuard{reserve: tt.reserve, free: func() (uint64, error) { return tt.avail, tt.freeErr }}
			err := g.admit(tt.n, tt.pending)
			if got := errors.Is(err, syscall.ENOSPC); got != tt.wantENOSPC {
				t.Fatalf("admit(%d, %d) with %d free, reserve %d: %v", tt.n, tt.pending, tt.avail, tt.reserve, err)
			}
		})
	}
}

// TestReserveOnSmallHostDisk puts a volume on a real 96 MiB tmpfs with a
// 32 MiB reserve and writes until the file system says no: it must say
// ENOSPC before the host disk is eaten into the reserve, keep what it
// accepted, and go on refusing.
func TestReserveOnSmallHostDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs as the host disk")
	}
	host := t.TempDir()
	if err := unix.Mount("tmpfs", host, "tmpfs", 0, "size=96m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(host, unix.MNT_DETACH) })
	free := func() (uint64, error) {
		var st unix.Statfs_t
		if err := unix.Statfs(host, &st); err != nil {
			return 0, err
		}
		return st.Bavail * uint64(st.Bsize), nil
	}
	const reserve = 32 << 20
	dir := filepath.Join(host, "vol")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	v := openVolume(t, dir, true)
	ctx := context.Background()
	fs, err := New(ctx, v.meta, v.bs, 1<<50, Config{FreeSpace: free, Reserve: reserve, MaxDirty: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		fs.Close(ctx)
		v.meta.Close(ctx)
	}()

	ino, fh := create(t, fs, "big")
	buf := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	var accepted int64
	// fill writes until ENOSPC, then makes what was accepted durable.
	fill := func() {
		t.Helper()
		for accepted < 96<<20 {
			for i := range buf { // random: blocks take their full size on the host
				buf[i] = byte(rng.Uint32())
			}
			_, err := fs.Write(ctx, ino, fh, accepted, buf)
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				t.Fatalf("write at %d: %v", accepted, err)
			}
			accepted += int64(len(buf))
		}
		if accepted >= 96<<20 {
			t.Fatalf("wrote %d MiB to a 96 MiB host disk without ENOSPC", accepted>>20)
		}
		if err := fs.Fsync(ctx, ino, fh, false); err != nil {
			t.Fatalf("fsync of what was accepted: %v", err)
		}
	}
	// Dirty data in memory counts as stored, so the first ENOSPC may come
	// early; once that is on disk, a second round finds the real edge.
	fill()
	fill()
	avail, _ := free()
	if avail+4<<20 < reserve { // a block's worth of slack for metadata
		t.Errorf("host disk has %d MiB free after ENOSPC; the reserve is %d MiB", avail>>20, reserve>>20)
	}
	if avail > reserve+8<<20 {
		t.Errorf("ENOSPC with %d MiB free on the host; the reserve is only %d MiB", avail>>20, reserve>>20)
	}
	if a, err := fs.GetAttr(ctx, ino); err != nil || a.Size != uint64(accepted) {
		t.Errorf("after ENOSPC: size %d (%v), want the %d bytes accepted", a.Size, err, accepted)
	}
}
