package computer

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/ohmfs/volume"
	"ohm/internal/template"
)

// newRuncManager returns a manager of real runc computers with the block
// layout, or skips.
func newRuncManager(t *testing.T) *Manager {
	t.Helper()
	requireBlock(t)
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("needs runc")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs /bin/busybox for the minimal template")
	}
	ctx := context.Background()
	dataDir := t.TempDir()
	seedTemplates(t, dataDir)
	m, err := Open(ctx, Options{DataDir: dataDir, Exe: ohmBinary(t), Templates: template.NewStore(dataDir), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		recs, _ := m.List(context.Background())
		for _, r := range recs {
			m.Delete(context.Background(), r.Name)
		}
		m.Close()
	})
	if _, err := m.tmpl.Ensure(ctx, "minimal", nil); err != nil {
		t.Fatal(err)
	}
	return m
}

// sums lists every file of the workspace with its checksum.
const sums = "cd /home/ohm && find . -type f | sort | xargs md5sum"

// runRoot runs a command as root in computer name.
func runRoot(t *testing.T, m *Manager, name, command string) string {
	t.Helper()
	var out, errb bytes.Buffer
	code, err := m.Exec(context.Background(), name, ExecOptions{Command: command, User: "root"}, nil, &out, &errb)
	if err != nil || code != 0 {
		t.Fatalf("%s: exit %d, %v: %s%s", command, code, err, out.String(), errb.String())
	}
	return out.String()
}

func wantCode(t *testing.T, what string, err error, code Code) {
	t.Helper()
	if err == nil || ErrorCode(err) != code {
		t.Fatalf("%s: got %v (%s), want a %s error", what, err, ErrorCode(err), code)
	}
	t.Logf("%s: %v", what, err)
}

// TestCheckpointRestoreFork runs real computers through checkpoint,
// restore and fork: both disks come back, writes in a fork and its parent
// never show in the other, forks of forks work, and a fork whose parent
// was deleted and collected reads back every file byte for byte.
func TestCheckpointRestoreFork(t *testing.T) {
	m := newRuncManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "par", Template: "minimal", DiskSizeMB: 256}); err != nil {
		t.Fatal(err)
	}
	run(t, m, "par", "echo one > /home/ohm/a && mkdir -p /home/ohm/d && head -c 20000000 /dev/urandom > /home/ohm/d/big && sync")
	runRoot(t, m, "par", "echo rootone > /etc/marker && sync")
	before := run(t, m, "par", sums)
	// The start time of the computer's init, in clock ticks since boot:
	// the same after a checkpoint if the computer kept running.
	const initStart = "cut -d' ' -f22 /proc/1/stat"
	initBefore := runRoot(t, m, "par", initStart)

	began := time.Now()
	c1, err := m.Checkpoint(ctx, "par", "before change")
	if err != nil {
		t.Fatal(err)
	}
	if got := runRoot(t, m, "par", initStart); got != initBefore {
		t.Errorf("the computer's init started at %q before the checkpoint, %q after: it did not keep running", initBefore, got)
	}
	t.Logf("checkpoint (running, 20 MB workspace): %v, id %s, disks %v, %d bytes of its own", time.Since(began).Round(time.Millisecond), c1.ID, c1.Disks, c1.Bytes)
	if len(c1.Disks) != 2 {
		t.Errorf("checkpoint holds %v, want the workspace and the root disk", c1.Disks)
	}
	run(t, m, "par", "echo two > /home/ohm/a && rm /home/ohm/d/big && sync")
	runRoot(t, m, "par", "echo roottwo > /etc/marker && sync")

	// A later checkpoint, which restoring the earlier one must keep.
	c2, err := m.Checkpoint(ctx, "par", "after change")
	if err != nil {
		t.Fatal(err)
	}
	cs, err := m.Checkpoints(ctx, "par")
	if err != nil || len(cs) != 2 || cs[0].ID != c1.ID || cs[0].Label != "before change" || cs[1].ID != c2.ID {
		t.Fatalf("checkpoints: %+v, %v", cs, err)
	}
	t.Logf("after the change, the checkpoint alone holds %d bytes", cs[0].Bytes)

	// Bad input: one clear error, nothing changed.
	wantCode(t, "restore of an unknown checkpoint", m.Restore(ctx, "par", "nope"), CodeNotFound)
	wantCode(t, "restore of a path", m.Restore(ctx, "par", "../x"), CodeNotFound)
	_, err = m.Fork(ctx, "par", "par", "")
	wantCode(t, "fork onto an existing name", err, CodeExists)
	_, err = m.Fork(ctx, "par", "kid", "nope")
	wantCode(t, "fork of an unknown checkpoint", err, CodeNotFound)
	if _, err := m.Get(ctx, "kid"); ErrorCode(err) != CodeNotFound {
		t.Fatalf("a failed fork left a computer: %v", err)
	}
	_, err = m.Checkpoint(ctx, "nosuch", "")
	wantCode(t, "checkpoint of a missing computer", err, CodeNotFound)
	if got := run(t, m, "par", "cat /home/ohm/a /etc/marker"); got != "two\nroottwo\n" {
		t.Fatalf("bad input changed the computer: %q", got)
	}

	began = time.Now()
	if err := m.Restore(ctx, "par", c1.ID); err != nil {
		t.Fatal(err)
	}
	t.Logf("restore (stop, restore, start): %v", time.Since(began).Round(time.Millisecond))
	if got := run(t, m, "par", sums); got != before {
		t.Fatalf("after restore:\n%s\nwant\n%s", got, before)
	}
	if got := run(t, m, "par", "cat /etc/marker"); got != "rootone\n" {
		t.Fatalf("root disk after restore: %q", got)
	}
	if cs, _ := m.Checkpoints(ctx, "par"); len(cs) != 2 || cs[1].ID != c2.ID {
		t.Fatalf("checkpoints after restore: %+v, want both, the later one kept", cs)
	}

	began = time.Now()
	kid, err := m.Fork(ctx, "par", "kid", c1.ID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fork of a checkpoint (running copy): %v", time.Since(began).Round(time.Millisecond))
	if kid.Name != "kid" || kid.State != StateRunning {
		t.Fatalf("fork: %+v", kid.Record)
	}
	if got := run(t, m, "kid", sums); got != before {
		t.Fatalf("fork's workspace:\n%s\nwant\n%s", got, before)
	}
	if got := run(t, m, "kid", "cat /etc/marker"); got != "rootone\n" {
		t.Fatalf("fork's root disk: %q", got)
	}
	if cs, _ := m.Checkpoints(ctx, "kid"); len(cs) != 0 {
		t.Errorf("a fork inherited checkpoints: %+v", cs)
	}
	run(t, m, "kid", "echo kid > /home/ohm/kidonly && echo kid > /home/ohm/a && sync")
	runRoot(t, m, "kid", "echo kidroot > /etc/marker && sync")
	run(t, m, "par", "echo par > /home/ohm/paronly && sync")
	if got := run(t, m, "par", "cat /home/ohm/a /etc/marker; ls /home/ohm"); got != "one\nrootone\na\nd\nparonly\n" {
		t.Errorf("parent after the fork's writes: %q", got)
	}
	if got := run(t, m, "kid", "ls /home/ohm"); got != "a\nd\nkidonly\n" {
		t.Errorf("fork after the parent's writes: %q", got)
	}

	// A fork of the fork, of its live state.
	began = time.Now()
	if _, err := m.Fork(ctx, "kid", "grandkid", ""); err != nil {
		t.Fatal(err)
	}
	t.Logf("fork of a running computer (its checkpoint taken now): %v", time.Since(began).Round(time.Millisecond))
	if got := run(t, m, "grandkid", "cat /home/ohm/kidonly /etc/marker"); got != "kid\nkidroot\n" {
		t.Errorf("fork of a fork: %q", got)
	}
	kidSums := run(t, m, "kid", sums)

	// Delete the parent, collect the fork's volume, read it all back.
	if err := m.Delete(ctx, "par"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(m.dir("par")); !os.IsNotExist(err) {
		t.Errorf("delete left the parent's state at %s: %v", m.dir("par"), err)
	}
	if err := m.Stop(ctx, "kid"); err != nil {
		t.Fatal(err)
	}
	res, err := volume.GCWith(ctx, m.volume("kid"), volume.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc of the fork's volume after its parent was deleted: %+v", res)
	probs, err := volume.Fsck(ctx, m.volume("kid"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		t.Errorf("fsck of the fork: %+v", p)
	}
	if err := m.Start(ctx, "kid"); err != nil {
		t.Fatal(err)
	}
	if got := run(t, m, "kid", sums); got != kidSums {
		t.Fatalf("fork after its parent was deleted:\n%s\nwant\n%s", got, kidSums)
	}
	if got := run(t, m, "grandkid", "cat /home/ohm/kidonly"); !strings.Contains(got, "kid") {
		t.Errorf("fork of the fork: %q", got)
	}

	if err := m.DeleteCheckpoint(ctx, "kid", c1.ID); ErrorCode(err) != CodeNotFound {
		t.Errorf("delete of another computer's checkpoint: %v", err)
	}
	c3, err := m.Checkpoint(ctx, "kid", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteCheckpoint(ctx, "kid", c3.ID); err != nil {
		t.Fatal(err)
	}
	if cs, _ := m.Checkpoints(ctx, "kid"); len(cs) != 0 {
		t.Errorf("checkpoints after delete: %+v", cs)
	}

	// A checkpoint of a computer being deleted: the two are serialised,
	// so the checkpoint either comes first (and goes with the computer)
	// or finds no computer; nothing of it is left either way.
	checkpointed := make(chan error, 1)
	go func() {
		_, err := m.Checkpoint(ctx, "grandkid", "racing the delete")
		checkpointed <- err
	}()
	if err := m.Delete(ctx, "grandkid"); err != nil {
		t.Fatal(err)
	}
	if err := <-checkpointed; err != nil && ErrorCode(err) != CodeNotFound {
		t.Errorf("checkpoint of a computer being deleted: %v, want success before the delete or a not-found error", err)
	}
	if _, err := m.Checkpoints(ctx, "grandkid"); ErrorCode(err) != CodeNotFound {
		t.Errorf("checkpoints of the deleted computer: %v", err)
	}
	if _, err := os.Lstat(m.dir("grandkid")); !os.IsNotExist(err) {
		t.Errorf("delete left state at %s: %v", m.dir("grandkid"), err)
	}
}

// TestCheckpointTimes measures checkpoint, restore and fork of a real
// computer with an empty workspace and with OHM_MEASURE_MB of data in
// OHM_MEASURE_FILES files. OHM_MEASURE=1 runs it; docs/checkpoints.md has
// the numbers.
func TestCheckpointTimes(t *testing.T) {
	if os.Getenv("OHM_MEASURE") == "" {
		t.Skip("a measurement: set OHM_MEASURE=1")
	}
	m := newRuncManager(t)
	ctx := context.Background()
	mb, files := envInt("OHM_MEASURE_MB", 1024), envInt("OHM_MEASURE_FILES", 10000)
	for _, full := range []bool{false, true} {
		name := map[bool]string{false: "empty", true: "full"}[full]
		if _, err := m.Create(ctx, CreateOptions{Name: name, Template: "minimal", DiskSizeMB: 1024}); err != nil {
			t.Fatal(err)
		}
		what := "an empty workspace"
		if full {
			began := time.Now()
			// Written from the host into the computer's btrfs (its
			// /home/ohm): a process per file inside would take hours.
			if err := writeTree(m.home(name), files, mb); err != nil {
				t.Fatal(err)
			}
			what = fmt.Sprintf("a workspace of %d MiB in %d files", mb, files+mb/64)
			t.Logf("%s: written in %v", what, time.Since(began).Round(time.Second))
		}
		df := run(t, m, name, "df -h /home/ohm | tail -1")
		began := time.Now()
		c, err := m.Checkpoint(ctx, name, "")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s (%s): checkpoint of the running computer %v", what, strings.TrimSpace(df), time.Since(began).Round(time.Millisecond))
		began = time.Now()
		c2, err := m.Checkpoint(ctx, name, "")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: second checkpoint %v; checkpoints hold %d and %d bytes of their own", what, time.Since(began).Round(time.Millisecond), c.Bytes, c2.Bytes)
		run(t, m, name, "echo changed > /home/ohm/changed && sync")
		began = time.Now()
		if err := m.Restore(ctx, name, c.ID); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: restore of the running computer (stop, restore, start) %v", what, time.Since(began).Round(time.Millisecond))
		if err := m.Stop(ctx, name); err != nil {
			t.Fatal(err)
		}
		began = time.Now()
		if err := m.Restore(ctx, name, c.ID); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: restore of the stopped computer %v", what, time.Since(began).Round(time.Millisecond))
		began = time.Now()
		if err := m.Start(ctx, name); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: its start %v", what, time.Since(began).Round(time.Millisecond))
		began = time.Now()
		if _, err := m.Fork(ctx, name, name+"-fork", c.ID); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: fork of a checkpoint, running %v", what, time.Since(began).Round(time.Millisecond))
		began = time.Now()
		if _, err := m.Fork(ctx, name, name+"-fork2", ""); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: fork of the running computer, running %v", what, time.Since(began).Round(time.Millisecond))
		if full {
			if got, want := run(t, m, name+"-fork2", "cd /home/ohm && find . -type f | wc -l"), run(t, m, name, "cd /home/ohm && find . -type f | wc -l"); got != want {
				t.Errorf("fork has %s files, parent %s", got, want)
			}
		}
		for _, n := range []string{name + "-fork2", name + "-fork", name} {
			if err := m.Delete(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// writeTree writes files files of 4 KiB in 100 directories under dir,
// then mb MiB in 64 MiB files, all random, and syncs the filesystem.
func writeTree(dir string, files, mb int) error {
	buf := make([]byte, 64<<20)
	rand.Read(buf)
	for i := 0; i < files; i++ {
		d := filepath.Join(dir, fmt.Sprintf("d%d", i%100))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		off := (i * 4096) % (len(buf) - 4096)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d", i)), buf[off:off+4096], 0o644); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "big"), 0o755); err != nil {
		return err
	}
	for i := 0; i < mb/64; i++ {
		buf[0], buf[1] = byte(i), byte(i>>8) // no two files alike
		if err := os.WriteFile(filepath.Join(dir, "big", fmt.Sprintf("b%d", i)), buf, 0o644); err != nil {
			return err
		}
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestThawLeftovers: a daemon that dies with a computer's filesystems
// frozen (during a checkpoint) leaves them to the next one, which thaws
// them.
func TestThawLeftovers(t *testing.T) {
	m := newRuncManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "frz", Template: "minimal", DiskSizeMB: 128}); err != nil {
		t.Fatal(err)
	}
	p := ckptPaths{pathsOfVolume(m.volume("frz"))}
	f, err := os.Open(p.diskMount())
	if err != nil {
		t.Fatal(err)
	}
	err = unix.IoctlSetPointerInt(int(f.Fd()), ioctlFIFREEZE, 0)
	f.Close() // the freeze stays: it is the filesystem's, not the descriptor's
	if err != nil {
		t.Fatal(err)
	}
	dataDir := m.dataDir
	m.Close()
	m2, err := Open(ctx, Options{DataDir: dataDir, Exe: ohmBinary(t), Templates: template.NewStore(dataDir), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m2.Delete(context.Background(), "frz"); err != nil {
			t.Errorf("delete: %v", err)
		}
		m2.Close()
	}()
	// A frozen btrfs would hold this write forever.
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var out bytes.Buffer
	code, err := m2.Exec(tctx, "frz", ExecOptions{Command: "echo x > /home/ohm/y && sync"}, nil, &out, &out)
	if err != nil || code != 0 {
		t.Fatalf("write after the new daemon started: %d, %v: %s", code, err, out.String())
	}
}
