package computer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"ohm/internal/mountinfo"
	"ohm/internal/ohmfs/fusefs"
	"ohm/internal/sandbox"

	"golang.org/x/sys/unix"
)

// A running computer's workspace is served by its own `ohm fs mount`
// process. If that process dies (a crash, kill -9, the OOM killer) the
// kernel ends its FUSE connection and every access to the mount answers
// ENOTCONN. A plain bind of the workspace into the computer would keep that
// dead mount for as long as the computer runs; instead the computer's /home
// is a slave of a shared host mount (computers/<name>/mnt) and the
// workspace is mounted at mnt/ohm on the host, so the supervisor below can
// detach the dead mount and mount the volume again, and both events
// propagate into the running computer. Between the two the computer sees
// an empty, read-only /home/ohm, never ENOTCONN.

// superviseEvery is how often the workspaces of running computers are
// checked.
const superviseEvery = time.Second

// healthTimeout bounds a check of a workspace: a mount whose process is
// alive but stuck counts as dead after it.
const healthTimeout = 10 * time.Second

// startSupervisor starts the loop that watches the workspaces of running
// computers; m.stopSupervisor ends it.
func (m *Manager) startSupervisor() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(superviseEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			m.mu.Lock()
			names := make([]string, 0, len(m.running))
			for name := range m.running {
				names = append(names, name)
			}
			m.mu.Unlock()
			for _, name := range names {
				m.superviseWorkspace(ctx, name)
			}
		}
	}()
	m.stopSupervisor = func() {
		cancel()
		wg.Wait()
	}
}

// superviseWorkspace checks the workspace of running computer name and
// mounts it again if its mount is dead. A computer busy in a lifecycle
// operation (its lock held) is left for the next round.
func (m *Manager) superviseWorkspace(ctx context.Context, name string) {
	l := m.lockOf(name)
	if !l.TryLock() {
		return
	}
	defer l.Unlock()
	if m.live(name) == nil || !mountinfo.IsMountpoint(m.homeMount(name)) {
		// Stopped meanwhile, or started before /home was a shared mount:
		// a new mount would not reach the computer.
		return
	}
	home := m.home(name)
	err := workspaceHealth(home)
	if h, ok := m.ws.(WorkspaceHealth); ok && err == nil {
		err = h.Health(ctx, m.volume(name), home)
	}
	if err == nil {
		return
	}
	// Checked before the remount replaces the dead volume mount.
	if m.rootLost(name) {
		defer m.stopRootLost(ctx, name)
	}
	began := time.Now()
	m.logf("workspace of %s: %v; mounting it again", name, err)
	if err := m.remountWorkspace(ctx, name); err != nil {
		m.logf("workspace of %s: mount again: %v", name, err)
		return
	}
	m.logf("workspace of %s: mounted again in %v", name, time.Since(began).Round(time.Millisecond))
}

// remountWorkspace replaces the dead workspace mount of name with a fresh
// one.
func (m *Manager) remountWorkspace(ctx context.Context, name string) error {
	m.endFeeds(name, "its workspace was mounted again after its storage failed")
	home := m.home(name)
	if mountinfo.IsMountpoint(home) {
		// A process that is gone has ended its FUSE connection already;
		// aborting it also frees one whose server is stuck, so the old
		// process lets go of the volume's lock.
		if err := abortFUSE(home); err != nil {
			m.logf("workspace of %s: %v", name, err)
		}
		// No link is followed: home is the computer's /home/ohm.
		if err := unix.Unmount(home, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
			return fmt.Errorf("detach dead mount %s: %w", home, err)
		}
	}
	if err := m.ws.Mount(ctx, m.volume(name), home); err != nil {
		return err
	}
	// It reaches the running computer with its flags as they are now.
	return sandbox.HardenWorkspace(home)
}

// fuseSuperMagic is statfs's f_type of a FUSE mount.
const fuseSuperMagic = 0x65735546

// workspaceHealth reports why the workspace mounted at home does not
// answer, or nil if it does.
func workspaceHealth(home string) error {
	done := make(chan error, 1)
	var st unix.Statfs_t
	go func() {
		// By descriptor, the last component opened without following a
		// link: it is in the computer's /home, which computers made
		// before /home was read-only inside could write.
		fd, err := unix.Open(home, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(fd)
		done <- unix.Fstatfs(fd, &st)
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("statfs: %w", err)
		}
	case <-time.After(healthTimeout):
		// The goroutine stays blocked until the connection is aborted.
		return fmt.Errorf("statfs: no answer in %v", healthTimeout)
	}
	if st.Type == fuseSuperMagic {
		return nil
	}
	// Not FUSE: a workspace of another kind (a bind-mounted directory), or
	// nothing mounted. A read of mountinfo racing with other mounts on the
	// host can miss an entry, so only three misses in a row count.
	for range 3 {
		if mountinfo.IsMountpoint(home) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return errors.New("not mounted")
}

// shareHome makes dir the computer's shared, read-only /home on the host
// (sandbox.ShareHome says how and why).
func shareHome(dir string) error { return sandbox.ShareHome(dir) }

// unshareHome undoes shareHome.
func unshareHome(dir string) error { return sandbox.UnshareHome(dir) }

// unmountHome unmounts the workspace of name (flushing it) and then its
// shared /home, and the workspace of the older layout if mounted.
func (m *Manager) unmountHome(ctx context.Context, name string) []error {
	var errs []error
	// The root disk on the workspace's volume, if any, first.
	if err := m.closeRoot(ctx, name); err != nil {
		return []error{err}
	}
	for _, mp := range []string{m.home(name), m.legacyHome(name)} {
		if err := m.ws.Unmount(ctx, mp); err != nil {
			errs = append(errs, fmt.Errorf("unmount workspace: %w", err))
		}
	}
	if len(errs) == 0 {
		if err := unshareHome(m.homeMount(name)); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// abortFUSE aborts the FUSE connection of the topmost mount at path (a
// no-op if that is not a FUSE mount), so that a server that hangs lets
// go. fusefs mounts fusectl first if it is not, and takes a connection
// already ended (its server died) as a no-op.
func abortFUSE(path string) error {
	m, ok, err := mountinfo.At(path)
	if err != nil || !ok || !strings.HasPrefix(m.FSType, "fuse") {
		return nil
	}
	return fusefs.AbortConnection(int(m.Minor))
}
