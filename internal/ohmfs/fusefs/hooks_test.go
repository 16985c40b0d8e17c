package fusefs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"ohm/internal/ohmfs/volume"
)

// mountWith formats a file volume and mounts it with opts.
func mountWith(t *testing.T, opts Options) (*volume.Volume, *Mounted, string) {
	t.Helper()
	requireFUSE(t)
	ctx := context.Background()
	dir := t.TempDir()
	url, mp := filepath.Join(dir, "vol"), filepath.Join(dir, "mnt")
	if err := volume.Format(ctx, url, volume.FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	vol, err := volume.Open(ctx, url, volume.OpenOptions{Mountpoint: mp})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Mount(ctx, vol, mp, opts)
	if err != nil {
		vol.Close(ctx)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Close(ctx)
		vol.Close(ctx)
	})
	return vol, m, m.Mountpoint()
}

func TestAfterFsync(t *testing.T) {
	var calls atomic.Int64
	var fail atomic.Bool
	_, _, mp := mountWith(t, Options{AfterFsync: func(ctx context.Context) error {
		calls.Add(1)
		if fail.Load() {
			return errors.New("replica unreachable")
		}
		return nil
	}})
	f, err := os.Create(filepath.Join(mp, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("data"); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	if calls.Load() == 0 {
		t.Fatal("fsync returned without running AfterFsync")
	}
	d, err := os.Open(mp)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	before := calls.Load()
	if err := d.Sync(); err != nil {
		t.Fatalf("fsyncdir: %v", err)
	}
	if calls.Load() == before {
		t.Fatal("fsyncdir returned without running AfterFsync")
	}

	fail.Store(true)
	f.WriteString("more")
	if err := f.Sync(); !errors.Is(err, unix.EIO) {
		t.Fatalf("fsync with a failing AfterFsync = %v, want EIO", err)
	}
}

func TestAbort(t *testing.T) {
	_, m, mp := mountWith(t, Options{})
	f, err := os.Create(filepath.Join(mp, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := m.Abort(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	default:
		t.Fatal("Done not closed after Abort")
	}
	if _, ok, _ := MountedAt(mp); ok {
		t.Error("still mounted after Abort")
	}
	if _, err := f.WriteString("x"); err == nil {
		if err := f.Sync(); err == nil {
			t.Error("write and fsync to an aborted mount succeeded")
		}
	}
}
