//go:build linux

package posix

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// env is what a check gets: its own directory (owned by the identity it
// runs as), the fixtures root made for it, and who it runs as.
type env struct {
	dir      string
	fixtures string
	uid, gid int
}

func (e *env) root() bool           { return e.uid == 0 }
func (e *env) p(name string) string { return filepath.Join(e.dir, name) }

// check is one row of the table: run makes and checks things; verify, if
// set, runs after the filesystem was remounted and checks what run left.
type check struct {
	name   string
	run    func(e *env) error
	verify func(e *env) error
}

var checks = []check{
	{"regular_files", checkRegularFiles, verifyRegularFiles},
	{"large_file", checkLargeFile, verifyLargeFile},
	{"directories", checkDirectories, nil},
	{"symlinks", checkSymlinks, verifySymlinks},
	{"hard_links", checkHardLinks, verifyHardLinks},
	{"rename_files", checkRenameFiles, nil},
	{"rename_dirs", checkRenameDirs, nil},
	{"rename_flags", checkRenameFlags, nil},
	{"unlink_open", checkUnlinkOpen, nil},
	{"truncate", checkTruncate, verifyTruncate},
	{"sparse", checkSparse, verifySparse},
	{"append", checkAppend, nil},
	{"fallocate", checkFallocate, nil},
	{"chmod", checkChmod, nil},
	{"chown", checkChown, nil},
	{"utimens", checkUtimens, verifyUtimens},
	{"permissions", checkPermissions, nil},
	{"xattrs", checkXattrs, verifyXattrs},
	{"flock", checkFlock, nil},
	{"fcntl_locks", checkFcntlLocks, nil},
	{"mmap", checkMmap, verifyMmap},
	{"name_length", checkNameLength, nil},
	{"fifo", checkFifo, nil},
	{"readdir_10000", checkReaddir10000, nil},
	{"statfs", checkStatfs, nil},
}

// --- helpers ---------------------------------------------------------------

// wantErrno checks that err is errno (any of them, where kernels differ).
func wantErrno(what string, err error, errnos ...syscall.Errno) error {
	for _, e := range errnos {
		if errors.Is(err, e) {
			return nil
		}
	}
	return fmt.Errorf("%s: got error %v, want %v", what, err, errnos)
}

func wantOK(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func lstat(path string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	return st, err
}

func wantContent(path string, want []byte) error {
	got, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", filepath.Base(path), err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s: content differs: %d bytes (sha %x), want %d bytes (sha %x)",
			filepath.Base(path), len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
	return nil
}

func randomBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// first returns the first non-nil error.
func first(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// --- regular files ----------------------------------------------------------

func checkRegularFiles(e *env) error {
	f := e.p("f")
	fd, err := unix.Open(f, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR, 0o666)
	if err != nil {
		return wantOK("create", err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte("hello, world")); err != nil {
		return wantOK("write", err)
	}
	if _, err := unix.Pwrite(fd, []byte("HELLO"), 0); err != nil {
		return wantOK("pwrite", err)
	}
	buf := make([]byte, 64)
	n, err := unix.Pread(fd, buf, 7)
	if err != nil || string(buf[:n]) != "world" {
		return fmt.Errorf("pread at 7: %q, %v; want \"world\"", buf[:n], err)
	}
	if off, err := unix.Seek(fd, 0, unix.SEEK_END); err != nil || off != 12 {
		return fmt.Errorf("seek end: %d, %v; want 12", off, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return wantOK("fstat", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o7777 != 0o644 {
		return fmt.Errorf("mode %o, want regular 0644 (0666 less umask 022)", st.Mode)
	}
	if int(st.Uid) != e.uid || int(st.Gid) != e.gid {
		return fmt.Errorf("owner %d:%d, want %d:%d", st.Uid, st.Gid, e.uid, e.gid)
	}
	if st.Size != 12 || st.Nlink != 1 {
		return fmt.Errorf("size %d nlink %d, want 12 and 1", st.Size, st.Nlink)
	}
	if err := unix.Fsync(fd); err != nil {
		return wantOK("fsync", err)
	}
	if err := unix.Fdatasync(fd); err != nil {
		return wantOK("fdatasync", err)
	}
	if err := wantContent(f, []byte("HELLO, world")); err != nil {
		return err
	}
	_, err = unix.Open(f, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR, 0o666)
	if err := wantErrno("O_EXCL on an existing file", err, unix.EEXIST); err != nil {
		return err
	}
	_, err = unix.Open(e.p("missing"), unix.O_RDONLY, 0)
	if err := wantErrno("open of a missing file", err, unix.ENOENT); err != nil {
		return err
	}
	_, err = unix.Open(f, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err := wantErrno("O_DIRECTORY on a file", err, unix.ENOTDIR); err != nil {
		return err
	}
	_, err = unix.Open(e.p("f/x"), unix.O_RDONLY, 0)
	if err := wantErrno("a file used as a directory", err, unix.ENOTDIR); err != nil {
		return err
	}
	ro, err := unix.Open(f, unix.O_RDONLY, 0)
	if err != nil {
		return wantOK("open read-only", err)
	}
	_, err = unix.Write(ro, []byte("x"))
	unix.Close(ro)
	if err := wantErrno("write to a read-only descriptor", err, unix.EBADF); err != nil {
		return err
	}
	tr, err := unix.Open(f, unix.O_WRONLY|unix.O_TRUNC, 0)
	if err != nil {
		return wantOK("open O_TRUNC", err)
	}
	unix.Close(tr)
	if st, err := lstat(f); err != nil || st.Size != 0 {
		return fmt.Errorf("after O_TRUNC: size %d, %v; want 0", st.Size, err)
	}
	// What verify reads after the remount: written and closed, never fsynced.
	return os.WriteFile(e.p("persist"), []byte("survives a remount\n"), 0o644)
}

func verifyRegularFiles(e *env) error {
	return first(wantContent(e.p("persist"), []byte("survives a remount\n")), wantContent(e.p("f"), nil))
}

// largeData spans several blocks of any plausible block size, with an odd
// length, and has an overwrite across a 4 MiB boundary.
func largeData() []byte {
	b := randomBytes(1, 9<<20+12345)
	copy(b[4<<20-1000:], bytes.Repeat([]byte{0xAB}, 3000))
	return b
}

func checkLargeFile(e *env) error {
	want := largeData()
	f, err := os.Create(e.p("big"))
	if err != nil {
		return err
	}
	defer f.Close()
	// Odd-sized writes, as programs do.
	orig := randomBytes(1, len(want))
	for off, step := 0, 1; off < len(orig); step = step*3 + 7 {
		if step > 1<<20 {
			step = 4093
		}
		end := min(off+step, len(orig))
		if _, err := f.Write(orig[off:end]); err != nil {
			return wantOK("write", err)
		}
		off = end
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xAB}, 3000), 4<<20-1000); err != nil {
		return wantOK("overwrite across 4 MiB", err)
	}
	if err := f.Close(); err != nil {
		return wantOK("close", err)
	}
	return wantContent(e.p("big"), want)
}

func verifyLargeFile(e *env) error { return wantContent(e.p("big"), largeData()) }

// --- directories ------------------------------------------------------------

func checkDirectories(e *env) error {
	d := e.p("d")
	if err := os.Mkdir(d, 0o777); err != nil {
		return wantOK("mkdir", err)
	}
	st, err := lstat(d)
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Mode&0o7777 != 0o755 {
		return fmt.Errorf("new dir mode %o, %v; want dir 0755", st.Mode, err)
	}
	if st.Nlink != 2 {
		return fmt.Errorf("empty dir nlink %d, want 2", st.Nlink)
	}
	if err := wantErrno("mkdir of an existing name", unix.Mkdir(d, 0o755), unix.EEXIST); err != nil {
		return err
	}
	for _, sub := range []string{"a", "b", "c"} {
		if err := os.Mkdir(filepath.Join(d, sub), 0o755); err != nil {
			return wantOK("mkdir sub", err)
		}
	}
	os.WriteFile(filepath.Join(d, "file"), nil, 0o644)
	if st, _ := lstat(d); st.Nlink != 5 {
		return fmt.Errorf("dir with 3 subdirs: nlink %d, want 5", st.Nlink)
	}
	names, err := readNames(d)
	if err != nil {
		return wantOK("readdir", err)
	}
	if strings.Join(names, ",") != "a,b,c,file" {
		return fmt.Errorf("readdir: %v, want a,b,c,file", names)
	}
	if err := wantErrno("rmdir of a non-empty dir", unix.Rmdir(d), unix.ENOTEMPTY, unix.EEXIST); err != nil {
		return err
	}
	if err := wantErrno("rmdir of a file", unix.Rmdir(filepath.Join(d, "file")), unix.ENOTDIR); err != nil {
		return err
	}
	if err := wantErrno("unlink of a dir", unix.Unlink(filepath.Join(d, "a")), unix.EISDIR); err != nil {
		return err
	}
	if err := wantErrno("mkdir under a file", unix.Mkdir(filepath.Join(d, "file", "x"), 0o755), unix.ENOTDIR); err != nil {
		return err
	}
	if err := wantErrno("rmdir of .", unix.Rmdir(filepath.Join(d, "a")+"/."), unix.EINVAL); err != nil {
		return err
	}
	if err := wantOK("rmdir", unix.Rmdir(filepath.Join(d, "a"))); err != nil {
		return err
	}
	if st, _ := lstat(d); st.Nlink != 4 {
		return fmt.Errorf("after rmdir of a subdir: nlink %d, want 4", st.Nlink)
	}
	if _, err := lstat(filepath.Join(d, "a")); !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("lstat of a removed dir: %v, want ENOENT", err)
	}
	return wantOK("remove all", os.RemoveAll(d))
}

func readNames(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

// --- symlinks ---------------------------------------------------------------

func checkSymlinks(e *env) error {
	os.WriteFile(e.p("target"), []byte("via link"), 0o644)
	if err := wantOK("symlink", os.Symlink("target", e.p("link"))); err != nil {
		return err
	}
	if got, err := os.Readlink(e.p("link")); err != nil || got != "target" {
		return fmt.Errorf("readlink: %q, %v", got, err)
	}
	st, err := lstat(e.p("link"))
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Size != int64(len("target")) {
		return fmt.Errorf("lstat of link: mode %o size %d, %v; want a symlink of size 6", st.Mode, st.Size, err)
	}
	if err := wantContent(e.p("link"), []byte("via link")); err != nil {
		return err
	}
	long := strings.Repeat("x/", 1000) + "end"
	if err := wantOK("symlink with a 2 KiB target", os.Symlink(long, e.p("longlink"))); err != nil {
		return err
	}
	if got, _ := os.Readlink(e.p("longlink")); got != long {
		return fmt.Errorf("readlink of a 2 KiB target: %d bytes, want %d", len(got), len(long))
	}
	os.Symlink("nowhere", e.p("dangling"))
	if _, err := os.Stat(e.p("dangling")); !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("stat of a dangling link: %v, want ENOENT", err)
	}
	os.Symlink("loop2", e.p("loop1"))
	os.Symlink("loop1", e.p("loop2"))
	if _, err := os.Stat(e.p("loop1")); !errors.Is(err, unix.ELOOP) {
		return fmt.Errorf("stat of a symlink loop: %v, want ELOOP", err)
	}
	_, err = unix.Open(e.p("link"), unix.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err := wantErrno("O_NOFOLLOW on a symlink", err, unix.ELOOP); err != nil {
		return err
	}
	if err := wantErrno("symlink over an existing name", unix.Symlink("x", e.p("target")), unix.EEXIST); err != nil {
		return err
	}
	os.Mkdir(e.p("sub"), 0o755)
	os.Symlink("../target", e.p("sub/up"))
	return wantContent(e.p("sub/up"), []byte("via link"))
}

func verifySymlinks(e *env) error {
	if got, err := os.Readlink(e.p("link")); err != nil || got != "target" {
		return fmt.Errorf("readlink: %q, %v", got, err)
	}
	long := strings.Repeat("x/", 1000) + "end"
	if got, _ := os.Readlink(e.p("longlink")); got != long {
		return fmt.Errorf("readlink of a 2 KiB target: %d bytes, want %d", len(got), len(long))
	}
	return wantContent(e.p("sub/up"), []byte("via link"))
}

// --- hard links -------------------------------------------------------------

func checkHardLinks(e *env) error {
	os.Mkdir(e.p("a"), 0o755)
	os.Mkdir(e.p("b"), 0o755)
	os.WriteFile(e.p("a/f"), []byte("one"), 0o644)
	if err := wantOK("link across dirs", os.Link(e.p("a/f"), e.p("b/g"))); err != nil {
		return err
	}
	s1, _ := lstat(e.p("a/f"))
	s2, _ := lstat(e.p("b/g"))
	if s1.Ino != s2.Ino || s1.Nlink != 2 || s2.Nlink != 2 {
		return fmt.Errorf("after link: ino %d/%d nlink %d/%d; want the same inode, nlink 2", s1.Ino, s2.Ino, s1.Nlink, s2.Nlink)
	}
	if err := os.WriteFile(e.p("b/g"), []byte("two"), 0o644); err != nil {
		return err
	}
	if err := wantContent(e.p("a/f"), []byte("two")); err != nil {
		return fmt.Errorf("write through one name, read through the other: %w", err)
	}
	os.Link(e.p("a/f"), e.p("a/h"))
	if err := os.Remove(e.p("a/f")); err != nil {
		return err
	}
	if st, _ := lstat(e.p("b/g")); st.Nlink != 2 {
		return fmt.Errorf("3 links less one: nlink %d, want 2", st.Nlink)
	}
	if err := wantErrno("link of a dir", unix.Link(e.p("a"), e.p("c")), unix.EPERM); err != nil {
		return err
	}
	return wantErrno("link onto an existing name", unix.Link(e.p("b/g"), e.p("a/h")), unix.EEXIST)
}

func verifyHardLinks(e *env) error {
	s1, err1 := lstat(e.p("b/g"))
	s2, err2 := lstat(e.p("a/h"))
	if err := first(err1, err2); err != nil {
		return err
	}
	if s1.Ino != s2.Ino || s1.Nlink != 2 {
		return fmt.Errorf("ino %d/%d nlink %d; want one inode with nlink 2", s1.Ino, s2.Ino, s1.Nlink)
	}
	return wantContent(e.p("a/h"), []byte("two"))
}

// --- rename -----------------------------------------------------------------

func checkRenameFiles(e *env) error {
	os.WriteFile(e.p("src"), []byte("new"), 0o644)
	os.WriteFile(e.p("dst"), []byte("old"), 0o644)
	old, err := os.Open(e.p("dst"))
	if err != nil {
		return err
	}
	defer old.Close()
	if err := wantOK("rename over an existing file", os.Rename(e.p("src"), e.p("dst"))); err != nil {
		return err
	}
	if _, err := lstat(e.p("src")); !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("source after rename: %v, want ENOENT", err)
	}
	if err := wantContent(e.p("dst"), []byte("new")); err != nil {
		return err
	}
	buf := make([]byte, 10)
	if n, _ := old.ReadAt(buf, 0); string(buf[:n]) != "old" {
		return fmt.Errorf("open replaced file reads %q, want \"old\"", buf[:n])
	}
	os.Mkdir(e.p("x"), 0o755)
	os.Mkdir(e.p("y"), 0o755)
	os.WriteFile(e.p("x/f"), []byte("moved"), 0o644)
	if err := wantOK("rename across dirs", os.Rename(e.p("x/f"), e.p("y/g"))); err != nil {
		return err
	}
	if err := wantContent(e.p("y/g"), []byte("moved")); err != nil {
		return err
	}
	if names, _ := readNames(e.p("x")); len(names) != 0 {
		return fmt.Errorf("source dir after rename lists %v", names)
	}
	if err := wantOK("rename onto itself", os.Rename(e.p("y/g"), e.p("y/g"))); err != nil {
		return err
	}
	if err := wantContent(e.p("y/g"), []byte("moved")); err != nil {
		return err
	}
	os.Link(e.p("y/g"), e.p("y/h"))
	if err := wantOK("rename onto a hard link of itself", os.Rename(e.p("y/g"), e.p("y/h"))); err != nil {
		return err
	}
	if _, err := lstat(e.p("y/g")); err != nil {
		return fmt.Errorf("rename between two links of one file must do nothing, but: %v", err)
	}
	return wantErrno("rename of a missing file", unix.Rename(e.p("nope"), e.p("z")), unix.ENOENT)
}

func checkRenameDirs(e *env) error {
	for _, d := range []string{"p1", "p2", "p1/d", "p1/d/sub", "full", "full/x", "empty"} {
		if err := os.Mkdir(e.p(d), 0o755); err != nil {
			return err
		}
	}
	os.WriteFile(e.p("p1/d/sub/f"), []byte("deep"), 0o644)
	os.WriteFile(e.p("file"), nil, 0o644)
	if err := wantErrno("rename of a dir into its own subtree", unix.Rename(e.p("p1/d"), e.p("p1/d/sub/d")), unix.EINVAL); err != nil {
		return err
	}
	if err := wantOK("rename of a dir across dirs", os.Rename(e.p("p1/d"), e.p("p2/d"))); err != nil {
		return err
	}
	if err := wantContent(e.p("p2/d/sub/f"), []byte("deep")); err != nil {
		return err
	}
	s1, _ := lstat(e.p("p1"))
	s2, _ := lstat(e.p("p2"))
	if s1.Nlink != 2 || s2.Nlink != 3 {
		return fmt.Errorf("parents' nlink after moving a dir: %d and %d, want 2 and 3", s1.Nlink, s2.Nlink)
	}
	if err := wantErrno("rename of a dir over a non-empty dir", unix.Rename(e.p("p2/d"), e.p("full")), unix.ENOTEMPTY, unix.EEXIST); err != nil {
		return err
	}
	if err := wantErrno("rename of a dir over a file", unix.Rename(e.p("p2/d"), e.p("file")), unix.ENOTDIR); err != nil {
		return err
	}
	if err := wantErrno("rename of a file over a dir", unix.Rename(e.p("file"), e.p("empty")), unix.EISDIR); err != nil {
		return err
	}
	if err := wantOK("rename of a dir over an empty dir", unix.Rename(e.p("p2/d"), e.p("empty"))); err != nil {
		return err
	}
	return wantContent(e.p("empty/sub/f"), []byte("deep"))
}

func checkRenameFlags(e *env) error {
	os.WriteFile(e.p("a"), []byte("A"), 0o644)
	os.WriteFile(e.p("b"), []byte("B"), 0o644)
	err := unix.Renameat2(unix.AT_FDCWD, e.p("a"), unix.AT_FDCWD, e.p("b"), unix.RENAME_NOREPLACE)
	if err := wantErrno("RENAME_NOREPLACE over an existing file", err, unix.EEXIST); err != nil {
		return err
	}
	if err := wantOK("RENAME_NOREPLACE to a new name", unix.Renameat2(unix.AT_FDCWD, e.p("a"), unix.AT_FDCWD, e.p("c"), unix.RENAME_NOREPLACE)); err != nil {
		return err
	}
	if err := wantOK("RENAME_EXCHANGE", unix.Renameat2(unix.AT_FDCWD, e.p("b"), unix.AT_FDCWD, e.p("c"), unix.RENAME_EXCHANGE)); err != nil {
		return err
	}
	return first(wantContent(e.p("b"), []byte("A")), wantContent(e.p("c"), []byte("B")))
}

// --- unlink of an open file -------------------------------------------------

func checkUnlinkOpen(e *env) error {
	data := randomBytes(2, 3<<20)
	os.WriteFile(e.p("f"), data, 0o644)
	f, err := os.Open(e.p("f"))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := os.Remove(e.p("f")); err != nil {
		return wantOK("unlink", err)
	}
	if _, err := lstat(e.p("f")); !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("lstat after unlink: %v, want ENOENT", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Nlink != 0 || st.Size != int64(len(data)) {
		return fmt.Errorf("fstat of the unlinked file: nlink %d size %d, %v; want 0 and %d", st.Nlink, st.Size, err, len(data))
	}
	dropCaches() // as root only; read from the filesystem, not the page cache
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		return fmt.Errorf("reading the unlinked file: %v, equal %v", err, bytes.Equal(got, data))
	}
	// A new file of the same name is another file.
	os.WriteFile(e.p("f"), []byte("new"), 0o644)
	if _, err := f.ReadAt(got[:3], 0); err != nil || bytes.Equal(got[:3], []byte("new")) {
		return fmt.Errorf("the unlinked file's data changed when the name was reused")
	}
	// Writing to an unlinked file works too.
	w, err := os.OpenFile(e.p("f"), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer w.Close()
	os.Remove(e.p("f"))
	if _, err := w.WriteAt([]byte("still here"), 100); err != nil {
		return wantOK("write to an unlinked file", err)
	}
	buf := make([]byte, 10)
	if _, err := w.ReadAt(buf, 100); err != nil || string(buf) != "still here" {
		return fmt.Errorf("read back from an unlinked file: %q, %v", buf, err)
	}
	return nil
}

// --- truncate ---------------------------------------------------------------

func checkTruncate(e *env) error {
	data := randomBytes(3, 6<<20)
	os.WriteFile(e.p("f"), data, 0o644)
	if err := os.Truncate(e.p("f"), 5<<20+17); err != nil {
		return wantOK("truncate down", err)
	}
	if err := wantContent(e.p("f"), data[:5<<20+17]); err != nil {
		return err
	}
	if err := os.Truncate(e.p("f"), 100); err != nil {
		return wantOK("truncate down", err)
	}
	if err := os.Truncate(e.p("f"), 8<<20); err != nil {
		return wantOK("truncate up", err)
	}
	want := make([]byte, 8<<20)
	copy(want, data[:100])
	if err := wantContent(e.p("f"), want); err != nil {
		return fmt.Errorf("truncate down then up must read zeros past the cut: %w", err)
	}
	f, err := os.OpenFile(e.p("f"), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(10); err != nil {
		return wantOK("ftruncate", err)
	}
	if _, err := f.WriteAt([]byte("Z"), 20); err != nil {
		return err
	}
	want = append(append(append([]byte{}, data[:10]...), make([]byte, 10)...), 'Z')
	return wantContent(e.p("f"), want)
}

func verifyTruncate(e *env) error {
	data := randomBytes(3, 10)
	return wantContent(e.p("f"), append(append(data, make([]byte, 10)...), 'Z'))
}

// --- sparse files -----------------------------------------------------------

const sparseOff = 1 << 30

func checkSparse(e *env) error {
	f, err := os.Create(e.p("sparse"))
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("end"), sparseOff); err != nil {
		return wantOK("write at 1 GiB", err)
	}
	if _, err := f.WriteAt([]byte("start"), 0); err != nil {
		return err
	}
	f.Sync()
	return checkSparseFile(e)
}

func checkSparseFile(e *env) error {
	st, err := lstat(e.p("sparse"))
	if err != nil {
		return err
	}
	if st.Size != sparseOff+3 {
		return fmt.Errorf("size %d, want %d", st.Size, sparseOff+3)
	}
	if st.Blocks*512 > 1<<20 {
		return fmt.Errorf("a 1 GiB file holding 8 bytes uses %d bytes (st_blocks %d): du must tell the truth about sparse files", st.Blocks*512, st.Blocks)
	}
	f, err := os.Open(e.p("sparse"))
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for _, off := range []int64{0, 300 << 20, sparseOff - 1<<20 + 3} {
		n, err := f.ReadAt(buf, off)
		if err != nil || n != len(buf) {
			return fmt.Errorf("read of the hole at %d: %d bytes, %v", off, n, err)
		}
		from := 0
		if off == 0 {
			if string(buf[:5]) != "start" {
				return fmt.Errorf("first bytes %q, want \"start\"", buf[:5])
			}
			from = 5
		}
		if i := bytes.IndexFunc(buf[from:], func(r rune) bool { return r != 0 }); i >= 0 && off != sparseOff-1<<20+3 {
			return fmt.Errorf("hole at %d reads a non-zero byte at +%d", off, from+i)
		}
	}
	tail := make([]byte, 10)
	n, _ := f.ReadAt(tail, sparseOff-2)
	if !bytes.Equal(tail[:n], []byte{0, 0, 'e', 'n', 'd'}) {
		return fmt.Errorf("bytes around the end: %q", tail[:n])
	}
	// du reads st_blocks; check it agrees.
	out, err := exec.Command("du", "-k", e.p("sparse")).Output()
	if err != nil {
		return wantOK("du", err)
	}
	var kb int
	fmt.Sscan(string(out), &kb)
	if kb > 1024 {
		return fmt.Errorf("du -k says %d KiB for a sparse file holding 8 bytes", kb)
	}
	// Real data counts.
	if err := os.WriteFile(e.p("dense"), randomBytes(4, 10<<20), 0o644); err != nil {
		return err
	}
	if st, _ := lstat(e.p("dense")); st.Blocks*512 < 10<<20 {
		return fmt.Errorf("a file holding 10 MiB of data has st_blocks %d (%d bytes)", st.Blocks, st.Blocks*512)
	}
	return nil
}

func verifySparse(e *env) error { return checkSparseFile(e) }

// --- O_APPEND ---------------------------------------------------------------

func checkAppend(e *env) error {
	os.WriteFile(e.p("log"), []byte("0123456789"), 0o644)
	a, err := os.OpenFile(e.p("log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := os.OpenFile(e.p("log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer b.Close()
	var want bytes.Buffer
	want.WriteString("0123456789")
	for i := 0; i < 100; i++ {
		w := a
		if i%3 == 0 {
			w = b
		}
		line := fmt.Sprintf("line %d from %s\n", i, map[bool]string{true: "b", false: "a"}[w == b])
		if _, err := w.WriteString(line); err != nil {
			return wantOK("append", err)
		}
		want.WriteString(line)
	}
	// A seek does not move where O_APPEND writes go.
	a.Seek(0, 0)
	a.WriteString("tail")
	want.WriteString("tail")
	return wantContent(e.p("log"), want.Bytes())
}

// --- fallocate --------------------------------------------------------------

func checkFallocate(e *env) error {
	f, err := os.Create(e.p("f"))
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	if err := unix.Fallocate(fd, 0, 0, 8<<20); err != nil {
		return wantOK("fallocate mode 0", err)
	}
	if st, _ := lstat(e.p("f")); st.Size != 8<<20 {
		return fmt.Errorf("fallocate 8 MiB: size %d", st.Size)
	}
	if err := wantContent(e.p("f"), make([]byte, 8<<20)); err != nil {
		return err
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 8<<20, 1<<20); err != nil {
		return wantOK("fallocate KEEP_SIZE", err)
	}
	if st, _ := lstat(e.p("f")); st.Size != 8<<20 {
		return fmt.Errorf("fallocate KEEP_SIZE changed the size to %d", st.Size)
	}
	data := randomBytes(5, 4<<20)
	g, err := os.Create(e.p("g"))
	if err != nil {
		return err
	}
	defer g.Close()
	g.Write(data)
	g.Sync()
	before, _ := lstat(e.p("g"))
	if before.Blocks*512 < 4<<20 {
		return fmt.Errorf("a file being written holds 4 MiB (written, fsynced, still open) but st_blocks says %d bytes", before.Blocks*512)
	}
	if err := unix.Fallocate(int(g.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 1<<20, 2<<20); err != nil {
		return wantOK("fallocate PUNCH_HOLE", err)
	}
	g.Sync()
	want := append([]byte{}, data...)
	clear(want[1<<20 : 3<<20])
	if err := wantContent(e.p("g"), want); err != nil {
		return fmt.Errorf("after punching 1..3 MiB: %w", err)
	}
	after, _ := lstat(e.p("g"))
	if after.Size != 4<<20 {
		return fmt.Errorf("PUNCH_HOLE changed the size to %d", after.Size)
	}
	if after.Blocks*512 > before.Blocks*512-(1<<20) {
		return fmt.Errorf("punching a 2 MiB hole left st_blocks at %d bytes (was %d)", after.Blocks*512, before.Blocks*512)
	}
	return nil
}

// --- chmod / chown / utimens ------------------------------------------------

func checkChmod(e *env) error {
	os.WriteFile(e.p("f"), nil, 0o644)
	for _, m := range []uint32{0o600, 0o000, 0o777, 0o4755, 0o2755, 0o1777, 0o640} {
		if err := unix.Chmod(e.p("f"), m); err != nil {
			return wantOK(fmt.Sprintf("chmod %o", m), err)
		}
		if st, _ := lstat(e.p("f")); st.Mode&0o7777 != m {
			return fmt.Errorf("chmod %o: mode reads %o", m, st.Mode&0o7777)
		}
	}
	before, _ := lstat(e.p("f"))
	unix.Chmod(e.p("f"), 0o644)
	after, _ := lstat(e.p("f"))
	if after.Ctim == before.Ctim && after.Ctim.Nano() != 0 {
		// ctime may not move within one clock tick; only flag a stuck ctime
		// when a later change still does not move it.
		unix.Chmod(e.p("f"), 0o600)
		if again, _ := lstat(e.p("f")); again.Ctim.Nano() < before.Ctim.Nano() {
			return fmt.Errorf("ctime went back on chmod")
		}
	}
	err := unix.Chmod(filepath.Join(e.fixtures, "private"), 0o644)
	if e.root() {
		unix.Chmod(filepath.Join(e.fixtures, "private"), 0o600)
		return wantOK("root chmod of another's file", err)
	}
	return wantErrno("chmod of another user's file", err, unix.EPERM)
}

func checkChown(e *env) error {
	os.WriteFile(e.p("f"), nil, 0o644)
	if e.root() {
		if err := wantOK("chown", os.Chown(e.p("f"), 1234, 5678)); err != nil {
			return err
		}
		if st, _ := lstat(e.p("f")); st.Uid != 1234 || st.Gid != 5678 {
			return fmt.Errorf("after chown 1234:5678: %d:%d", st.Uid, st.Gid)
		}
		os.Symlink("f", e.p("l"))
		if err := wantOK("lchown", os.Lchown(e.p("l"), 42, 43)); err != nil {
			return err
		}
		if st, _ := lstat(e.p("l")); st.Uid != 42 || st.Gid != 43 {
			return fmt.Errorf("after lchown 42:43: %d:%d", st.Uid, st.Gid)
		}
		if st, _ := lstat(e.p("f")); st.Uid != 1234 {
			return fmt.Errorf("lchown changed the target")
		}
		// A setgid directory hands its group down.
		os.Mkdir(e.p("sg"), 0o755)
		os.Chown(e.p("sg"), 0, 5678)
		unix.Chmod(e.p("sg"), 0o2775)
		os.WriteFile(e.p("sg/f"), nil, 0o644)
		os.Mkdir(e.p("sg/d"), 0o755)
		s1, _ := lstat(e.p("sg/f"))
		s2, _ := lstat(e.p("sg/d"))
		if s1.Gid != 5678 || s2.Gid != 5678 || s2.Mode&unix.S_ISGID == 0 {
			return fmt.Errorf("in a setgid dir: file gid %d, dir gid %d mode %o; want gid 5678 and a setgid subdir", s1.Gid, s2.Gid, s2.Mode)
		}
	} else {
		if err := wantErrno("chown to root", unix.Chown(e.p("f"), 0, 0), unix.EPERM); err != nil {
			return err
		}
		if err := wantOK("chown to oneself", os.Chown(e.p("f"), e.uid, e.gid)); err != nil {
			return err
		}
		if err := wantErrno("chown of another's file", unix.Chown(filepath.Join(e.fixtures, "shared"), e.uid, e.gid), unix.EPERM); err != nil {
			return err
		}
	}
	// chown clears setuid and setgid on an executable.
	unix.Chmod(e.p("f"), 0o6755)
	uid, gid := e.uid, e.gid
	if e.root() {
		uid, gid = 1234, 5678
	}
	if err := os.Chown(e.p("f"), uid, gid); err != nil {
		return wantOK("chown of a setuid file", err)
	}
	if st, _ := lstat(e.p("f")); st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		return fmt.Errorf("chown left mode %o: setuid/setgid must be cleared", st.Mode&0o7777)
	}
	return nil
}

var (
	atime = unix.Timespec{Sec: 1_600_000_000, Nsec: 123_456_789}
	mtime = unix.Timespec{Sec: 1_500_000_000, Nsec: 987_654_321}
)

func checkUtimens(e *env) error {
	os.WriteFile(e.p("f"), []byte("x"), 0o644)
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, e.p("f"), []unix.Timespec{atime, mtime}, 0); err != nil {
		return wantOK("utimensat", err)
	}
	if err := verifyUtimens(e); err != nil {
		return err
	}
	omit := unix.Timespec{Nsec: unix.UTIME_OMIT}
	newM := unix.Timespec{Sec: 1_400_000_000, Nsec: 1}
	unix.UtimesNanoAt(unix.AT_FDCWD, e.p("g"), nil, 0)
	os.WriteFile(e.p("g"), nil, 0o644)
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, e.p("g"), []unix.Timespec{atime, mtime}, 0); err != nil {
		return err
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, e.p("g"), []unix.Timespec{omit, newM}, 0); err != nil {
		return wantOK("utimensat with UTIME_OMIT", err)
	}
	if st, _ := lstat(e.p("g")); st.Atim != atime || st.Mtim != newM {
		return fmt.Errorf("UTIME_OMIT: atime %v mtime %v, want %v %v", st.Atim, st.Mtim, atime, newM)
	}
	os.Symlink("f", e.p("l"))
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, e.p("l"), []unix.Timespec{atime, newM}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return wantOK("utimensat of a symlink", err)
	}
	if st, _ := lstat(e.p("l")); st.Mtim != newM {
		return fmt.Errorf("symlink mtime %v, want %v", st.Mtim, newM)
	}
	// A write moves mtime to now.
	f, _ := os.OpenFile(e.p("g"), os.O_WRONLY, 0)
	f.Write([]byte("x"))
	f.Close()
	if st, _ := lstat(e.p("g")); st.Mtim.Sec < 1_700_000_000 {
		return fmt.Errorf("mtime after a write: %v, want now", st.Mtim)
	}
	shared := filepath.Join(e.fixtures, "shared")
	err := unix.UtimesNanoAt(unix.AT_FDCWD, shared, []unix.Timespec{atime, mtime}, 0)
	if !e.root() {
		if err := wantErrno("explicit times on another's file", err, unix.EPERM); err != nil {
			return err
		}
	} else if err != nil {
		return wantOK("root sets times on another's file", err)
	}
	now := unix.Timespec{Nsec: unix.UTIME_NOW}
	return wantOK("UTIME_NOW on a file one may write", unix.UtimesNanoAt(unix.AT_FDCWD, shared, []unix.Timespec{now, now}, 0))
}

func verifyUtimens(e *env) error {
	st, err := lstat(e.p("f"))
	if err != nil {
		return err
	}
	if st.Atim != atime || st.Mtim != mtime {
		return fmt.Errorf("times %v / %v, want %v / %v (to the nanosecond)", st.Atim, st.Mtim, atime, mtime)
	}
	return nil
}

// --- permissions ------------------------------------------------------------

func checkPermissions(e *env) error {
	fx := func(name string) string { return filepath.Join(e.fixtures, name) }
	type probe struct {
		what string
		err  error
		want syscall.Errno // for a non-root user; root gets through
	}
	os.WriteFile(e.p("none"), []byte("x"), 0o644)
	unix.Chmod(e.p("none"), 0)
	os.WriteFile(e.p("ro"), []byte("x"), 0o444)
	os.Mkdir(e.p("nox"), 0o755)
	os.WriteFile(e.p("nox/f"), nil, 0o644)
	unix.Chmod(e.p("nox"), 0o666)
	os.Mkdir(e.p("nor"), 0o755)
	unix.Chmod(e.p("nor"), 0o333)
	os.Mkdir(e.p("now"), 0o755)
	unix.Chmod(e.p("now"), 0o555)
	open := func(p string, flags int) error {
		fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}
	_, statErr := lstat(e.p("nox/f"))
	_, readdirErr := os.ReadDir(e.p("nor"))
	probes := []probe{
		{"read another's private file", open(fx("private"), unix.O_RDONLY), unix.EACCES},
		{"create in another's dir", open(fx("rootdir/new"), unix.O_CREAT|unix.O_WRONLY), unix.EACCES},
		{"mkdir in another's dir", unix.Mkdir(fx("rootdir/newdir"), 0o755), unix.EACCES},
		{"unlink another's file in a sticky dir", unix.Unlink(fx("sticky/f")), unix.EPERM},
		{"read one's own mode-000 file", open(e.p("none"), unix.O_RDONLY), unix.EACCES},
		{"write a read-only file", open(e.p("ro"), unix.O_WRONLY), unix.EACCES},
		{"stat in a dir without x", statErr, unix.EACCES},
		{"readdir of a dir without r", readdirErr, unix.EACCES},
		{"create in a dir without w", open(e.p("now/f"), unix.O_CREAT|unix.O_WRONLY), unix.EACCES},
		{"access(W_OK) of a read-only file", unix.Access(e.p("ro"), unix.W_OK), unix.EACCES},
	}
	for _, p := range probes {
		if e.root() {
			if err := wantOK(p.what+" as root", p.err); err != nil {
				return err
			}
		} else if err := wantErrno(p.what, p.err, p.want); err != nil {
			return err
		}
	}
	if e.root() {
		// Put the fixtures back for the next identity.
		os.Remove(fx("rootdir/new"))
		os.Remove(fx("rootdir/newdir"))
		os.WriteFile(fx("sticky/f"), []byte("x"), 0o666)
	}
	if err := wantOK("read a world-writable file", open(fx("shared"), unix.O_RDWR)); err != nil {
		return err
	}
	unix.Chmod(e.p("nox"), 0o755)
	unix.Chmod(e.p("nor"), 0o755)
	unix.Chmod(e.p("now"), 0o755)
	return nil
}

// --- xattrs -----------------------------------------------------------------

func checkXattrs(e *env) error {
	f := e.p("f")
	os.WriteFile(f, nil, 0o644)
	bin := []byte{0, 1, 2, 255, 'v'}
	if err := unix.Setxattr(f, "user.a", []byte("1"), unix.XATTR_CREATE); err != nil {
		return wantOK("setxattr XATTR_CREATE", err)
	}
	if err := wantErrno("XATTR_CREATE of an existing name", unix.Setxattr(f, "user.a", []byte("2"), unix.XATTR_CREATE), unix.EEXIST); err != nil {
		return err
	}
	if err := wantErrno("XATTR_REPLACE of a missing name", unix.Setxattr(f, "user.b", []byte("2"), unix.XATTR_REPLACE), unix.ENODATA); err != nil {
		return err
	}
	if err := wantOK("XATTR_REPLACE", unix.Setxattr(f, "user.a", []byte("replaced"), unix.XATTR_REPLACE)); err != nil {
		return err
	}
	unix.Setxattr(f, "user.bin", bin, 0)
	unix.Setxattr(f, "user.empty", nil, 0)
	unix.Setxattr(f, "user.gone", []byte("x"), 0)
	if err := wantOK("removexattr", unix.Removexattr(f, "user.gone")); err != nil {
		return err
	}
	if err := wantErrno("removexattr of a missing name", unix.Removexattr(f, "user.gone"), unix.ENODATA); err != nil {
		return err
	}
	if err := verifyXattrs(e); err != nil {
		return err
	}
	buf := make([]byte, 2)
	_, err := unix.Getxattr(f, "user.a", buf)
	if err := wantErrno("getxattr into a small buffer", err, unix.ERANGE); err != nil {
		return err
	}
	os.Symlink("f", e.p("l"))
	if err := wantErrno("user.* xattr on a symlink", unix.Lsetxattr(e.p("l"), "user.x", []byte("1"), 0), unix.EPERM); err != nil {
		return err
	}
	err = unix.Setxattr(f, "trusted.x", []byte("1"), 0)
	if e.root() {
		return wantOK("trusted.* xattr as root", err)
	}
	return wantErrno("trusted.* xattr as a user", err, unix.EPERM)
}

func verifyXattrs(e *env) error {
	f := e.p("f")
	get := func(name string) ([]byte, error) {
		buf := make([]byte, 256)
		n, err := unix.Getxattr(f, name, buf)
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	if v, err := get("user.a"); err != nil || string(v) != "replaced" {
		return fmt.Errorf("user.a = %q, %v", v, err)
	}
	if v, err := get("user.bin"); err != nil || !bytes.Equal(v, []byte{0, 1, 2, 255, 'v'}) {
		return fmt.Errorf("user.bin = %q, %v", v, err)
	}
	if v, err := get("user.empty"); err != nil || len(v) != 0 {
		return fmt.Errorf("user.empty = %q, %v", v, err)
	}
	if _, err := get("user.gone"); !errors.Is(err, unix.ENODATA) {
		return fmt.Errorf("removed user.gone: %v, want ENODATA", err)
	}
	buf := make([]byte, 1024)
	n, err := unix.Listxattr(f, buf)
	if err != nil {
		return wantOK("listxattr", err)
	}
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if strings.HasPrefix(s, "user.") {
			names = append(names, s)
		}
	}
	sort.Strings(names)
	if strings.Join(names, " ") != "user.a user.bin user.empty" {
		return fmt.Errorf("listxattr: %v", names)
	}
	return nil
}

// --- locks ------------------------------------------------------------------

// lockHelperMain is another process trying locks on a file; it prints what
// it got. args: op, path.
func lockHelperMain(args []string) int {
	op, path := args[0], args[1]
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		fmt.Print("open: ", err)
		return 0
	}
	defer f.Close()
	fd := int(f.Fd())
	switch op {
	case "flock-ex":
		fmt.Print(errName(unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)))
	case "flock-sh":
		fmt.Print(errName(unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB)))
	case "setlk-0-10", "setlk-100-10":
		start := int64(0)
		if op == "setlk-100-10" {
			start = 100
		}
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: start, Len: 10}
		fmt.Print(errName(unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &lk)))
	case "getlk":
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 10}
		if err := unix.FcntlFlock(uintptr(fd), unix.F_GETLK, &lk); err != nil {
			fmt.Print(errName(err))
		} else {
			fmt.Printf("type=%d pid=%d", lk.Type, lk.Pid)
		}
	}
	return 0
}

func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return unix.ErrnoName(en)
	}
	return err.Error()
}

func helper(op, path string) string {
	self, _ := os.Executable()
	cmd := exec.Command(self, "-test.run=^$", op, path)
	cmd.Env = append(os.Environ(), envMode+"=lockhelper")
	out, err := cmd.Output()
	if err != nil {
		return fmt.Sprintf("helper failed: %v", err)
	}
	return string(out)
}

func checkFlock(e *env) error {
	p := e.p("lock")
	os.WriteFile(p, nil, 0o644)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		return wantOK("flock LOCK_EX", err)
	}
	if got := helper("flock-ex", p); got != "EWOULDBLOCK" && got != "EAGAIN" {
		return fmt.Errorf("another process's LOCK_EX against our LOCK_EX: %s, want EWOULDBLOCK", got)
	}
	if got := helper("flock-sh", p); got != "EWOULDBLOCK" && got != "EAGAIN" {
		return fmt.Errorf("another process's LOCK_SH against our LOCK_EX: %s, want EWOULDBLOCK", got)
	}
	if err := unix.Flock(fd, unix.LOCK_SH); err != nil {
		return wantOK("downgrade to LOCK_SH", err)
	}
	if got := helper("flock-sh", p); got != "ok" {
		return fmt.Errorf("another process's LOCK_SH against our LOCK_SH: %s, want ok", got)
	}
	if got := helper("flock-ex", p); got != "EWOULDBLOCK" && got != "EAGAIN" {
		return fmt.Errorf("another process's LOCK_EX against our LOCK_SH: %s, want EWOULDBLOCK", got)
	}
	unix.Flock(fd, unix.LOCK_UN)
	if got := helper("flock-ex", p); got != "ok" {
		return fmt.Errorf("LOCK_EX after we unlocked: %s, want ok", got)
	}
	return nil
}

func checkFcntlLocks(e *env) error {
	p := e.p("lock")
	os.WriteFile(p, make([]byte, 200), 0o644)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 100}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		return wantOK("F_SETLK write lock on 0..99", err)
	}
	if got := helper("setlk-0-10", p); got != "EAGAIN" && got != "EACCES" {
		return fmt.Errorf("another process's F_SETLK on a locked range: %s, want EAGAIN", got)
	}
	if got := helper("setlk-100-10", p); got != "ok" {
		return fmt.Errorf("another process's F_SETLK on a free range: %s, want ok", got)
	}
	want := fmt.Sprintf("type=%d pid=%d", unix.F_WRLCK, os.Getpid())
	if got := helper("getlk", p); got != want {
		return fmt.Errorf("F_GETLK from another process: %q, want %q", got, want)
	}
	lk.Type = unix.F_UNLCK
	unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
	if got := helper("setlk-0-10", p); got != "ok" {
		return fmt.Errorf("F_SETLK after we unlocked: %s, want ok", got)
	}
	if got := helper("getlk", p); got != fmt.Sprintf("type=%d pid=0", unix.F_UNLCK) {
		return fmt.Errorf("F_GETLK with no lock held: %q", got)
	}
	return nil
}

// --- mmap -------------------------------------------------------------------

func mmapData() []byte { return randomBytes(6, 3<<20) }

func checkMmap(e *env) error {
	for _, name := range []string{"synced", "unsynced"} {
		want := mmapData()
		f, err := os.Create(e.p(name))
		if err != nil {
			return err
		}
		if err := f.Truncate(int64(len(want))); err != nil {
			f.Close()
			return err
		}
		m, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			f.Close()
			return wantOK("mmap MAP_SHARED", err)
		}
		copy(m, want)
		if name == "synced" {
			if err := unix.Msync(m, unix.MS_SYNC); err != nil {
				return wantOK("msync", err)
			}
		}
		got := make([]byte, len(want))
		if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
			return fmt.Errorf("read() after mmap writes: %v, equal %v", err, bytes.Equal(got, want))
		}
		unix.Munmap(m)
		f.Close()
	}
	return nil
}

func verifyMmap(e *env) error {
	return first(wantContent(e.p("synced"), mmapData()), wantContent(e.p("unsynced"), mmapData()))
}

// --- names ------------------------------------------------------------------

func checkNameLength(e *env) error {
	n255 := strings.Repeat("n", 255)
	n256 := strings.Repeat("n", 256)
	if err := wantOK("create a 255-byte name", os.WriteFile(e.p(n255), []byte("x"), 0o644)); err != nil {
		return err
	}
	if names, _ := readNames(e.dir); len(names) != 1 || names[0] != n255 {
		return fmt.Errorf("readdir does not list the 255-byte name")
	}
	if err := wantContent(e.p(n255), []byte("x")); err != nil {
		return err
	}
	u := strings.Repeat("é", 127) + "x" // 255 bytes of UTF-8
	if err := wantOK("create a 255-byte UTF-8 name", os.WriteFile(e.p(u), nil, 0o644)); err != nil {
		return err
	}
	_, err := unix.Open(e.p(n256), unix.O_CREAT|unix.O_WRONLY, 0o644)
	if err := wantErrno("create a 256-byte name", err, unix.ENAMETOOLONG); err != nil {
		return err
	}
	if err := wantErrno("mkdir a 256-byte name", unix.Mkdir(e.p(n256), 0o755), unix.ENAMETOOLONG); err != nil {
		return err
	}
	if err := wantErrno("symlink to a 256-byte name", unix.Symlink("x", e.p(n256)), unix.ENAMETOOLONG); err != nil {
		return err
	}
	if err := wantErrno("rename to a 256-byte name", unix.Rename(e.p(n255), e.p(n256)), unix.ENAMETOOLONG); err != nil {
		return err
	}
	_, err = lstat(e.p(n256))
	return wantErrno("lstat a 256-byte name", err, unix.ENAMETOOLONG)
}

func checkFifo(e *env) error {
	if err := unix.Mkfifo(e.p("fifo"), 0o644); err != nil {
		return wantOK("mkfifo", err)
	}
	st, err := lstat(e.p("fifo"))
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return fmt.Errorf("lstat of a fifo: mode %o, %v", st.Mode, err)
	}
	return nil
}

// --- readdir ----------------------------------------------------------------

func checkReaddir10000(e *env) error {
	const n = 10000
	d := e.p("d")
	os.Mkdir(d, 0o755)
	for i := 0; i < n; i++ {
		fd, err := unix.Open(filepath.Join(d, fmt.Sprintf("entry-%05d", i)), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return wantOK(fmt.Sprintf("create entry %d", i), err)
		}
		unix.Close(fd)
	}
	for pass := 0; pass < 2; pass++ {
		names, err := readNames(d)
		if err != nil {
			return wantOK("readdir", err)
		}
		if len(names) != n {
			return fmt.Errorf("readdir pass %d: %d entries, want %d", pass, len(names), n)
		}
		for i, name := range names {
			if name != fmt.Sprintf("entry-%05d", i) {
				return fmt.Errorf("readdir pass %d: entry %d is %q", pass, i, name)
			}
		}
	}
	// rm -r reads and unlinks as it goes: every entry must come exactly once.
	f, err := os.Open(d)
	if err != nil {
		return err
	}
	defer f.Close()
	seen := map[string]int{}
	for {
		batch, err := f.Readdirnames(128)
		for _, name := range batch {
			seen[name]++
			if err := os.Remove(filepath.Join(d, name)); err != nil {
				return wantOK("unlink while reading the dir", err)
			}
		}
		if err != nil || len(batch) == 0 {
			break
		}
	}
	if len(seen) != n {
		return fmt.Errorf("reading while unlinking saw %d distinct entries, want %d", len(seen), n)
	}
	for name, c := range seen {
		if c != 1 {
			return fmt.Errorf("reading while unlinking saw %s %d times", name, c)
		}
	}
	if names, _ := readNames(d); len(names) != 0 {
		return fmt.Errorf("%d entries left after removing all", len(names))
	}
	return wantOK("rmdir", os.Remove(d))
}

// --- statfs -----------------------------------------------------------------

func checkStatfs(e *env) error {
	var s unix.Statfs_t
	if err := unix.Statfs(e.dir, &s); err != nil {
		return wantOK("statfs", err)
	}
	if s.Blocks == 0 || s.Bfree > s.Blocks || s.Bavail > s.Bfree || s.Bsize == 0 {
		return fmt.Errorf("statfs: blocks %d free %d avail %d bsize %d", s.Blocks, s.Bfree, s.Bavail, s.Bsize)
	}
	if s.Namelen != 255 {
		return fmt.Errorf("statfs namelen %d, want 255", s.Namelen)
	}
	if s.Files != 0 && s.Ffree > s.Files {
		return fmt.Errorf("statfs: files %d free %d", s.Files, s.Ffree)
	}
	return nil
}
