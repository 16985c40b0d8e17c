// Package fileops is the file side of the Ohm API that runs inside a
// computer: `ohm files OP PATH`, run by the daemon through the computer's
// agent as the requesting user. Doing file I/O inside the computer means
// every path (symlinks included) resolves in the computer's own mount
// namespace, with that user's permissions, so no path can reach the host.
//
// Results go to stdout (JSON for stat and list, bytes for cat and tar).
// A failure exits non-zero with one JSON line {"code", "message"} on
// stderr, codes as in package ohm/client.
package fileops

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"ohm/client"
)

// Error is a failure with a client error code.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// classify gives err a client code.
func classify(op, p string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	code := client.CodeInternal
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		code = client.CodeNotFound
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.ELOOP),
		errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EROFS), errors.Is(err, fs.ErrExist):
		code = client.CodeInvalid
	}
	msg := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		msg = pe.Err.Error()
	}
	return &Error{Code: code, Message: fmt.Sprintf("%s %s: %s", op, p, msg)}
}

// Info describes the file at p (not following a final symlink).
func Info(p string, fi fs.FileInfo) client.FileInfo {
	info := client.FileInfo{
		Path: p, Name: fi.Name(), Size: fi.Size(),
		Mode: uint32(fi.Mode().Perm()), ModTime: fi.ModTime().UTC(),
	}
	switch m := fi.Mode(); {
	case m.IsRegular():
		info.Type = "file"
	case m.IsDir():
		info.Type = "dir"
	case m&fs.ModeSymlink != 0:
		info.Type = "symlink"
		info.LinkTarget, _ = os.Readlink(p)
	default:
		info.Type = "other"
	}
	if p == "/" {
		info.Name = "/"
	}
	return info
}

// Stat writes the FileInfo of p as JSON.
func Stat(w io.Writer, p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return classify("stat", p, err)
	}
	return json.NewEncoder(w).Encode(Info(p, fi))
}

// List writes {"entries": [...], "truncated": bool} for the directory p:
// at most limit entries, sorted by name.
func List(w io.Writer, p string, limit int) error {
	f, err := os.Open(p)
	if err != nil {
		return classify("list", p, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return classify("list", p, err)
	}
	sort.Strings(names)
	truncated := false
	if len(names) > limit {
		names, truncated = names[:limit], true
	}
	entries := make([]client.FileInfo, 0, len(names))
	for _, n := range names {
		q := path.Join(p, n)
		fi, err := os.Lstat(q)
		if err != nil {
			continue // removed meanwhile
		}
		entries = append(entries, Info(q, fi))
	}
	return json.NewEncoder(w).Encode(client.FileList{Entries: entries, Truncated: truncated})
}

// Cat copies the regular file p to w.
func Cat(w io.Writer, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return classify("read", p, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return classify("read", p, err)
	}
	if fi.IsDir() {
		return &Error{Code: client.CodeInvalid, Message: fmt.Sprintf("read %s: is a directory (use archive=tar)", p)}
	}
	if _, err := io.Copy(w, f); err != nil {
		return classify("read", p, err)
	}
	return nil
}

// Write replaces the file p with r's bytes: they go to a temporary file
// next to it, renamed over p only once all size bytes (if size >= 0) have
// arrived, so an interrupted upload leaves p as it was. A new file gets
// mode 0644 (less the umask); an existing one keeps its mode.
func Write(r io.Reader, p string, size int64) error {
	dir := path.Dir(p)
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(p); err == nil {
		if fi.IsDir() {
			return &Error{Code: client.CodeInvalid, Message: fmt.Sprintf("write %s: is a directory (use archive=tar)", p)}
		}
		mode = fi.Mode().Perm()
	}
	tmp, err := os.CreateTemp(dir, "."+path.Base(p)+".ohm-*")
	if err != nil {
		return classify("write", p, err)
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, r)
	if err == nil && size >= 0 && n != size {
		err = &Error{Code: client.CodeInvalid, Message: fmt.Sprintf("write %s: got %d bytes of %d", p, n, size)}
	}
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		return classify("write", p, err)
	}
	return nil
}

// Tar writes the contents of directory dir to w as a tar stream, names
// relative to dir. Symlinks are archived as links, never followed.
func Tar(w io.Writer, dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return classify("archive", dir, err)
	}
	if !fi.IsDir() {
		return &Error{Code: client.CodeInvalid, Message: fmt.Sprintf("archive %s: not a directory", dir)}
	}
	tw := tar.NewWriter(w)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		var link string
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return nil // sockets and the like: skip
		}
		rel, _ := filepath.Rel(dir, p)
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.CopyN(tw, f, hdr.Size)
		return err
	})
	if err != nil {
		return classify("archive", dir, err)
	}
	return tw.Close()
}

// Untar extracts the tar stream r into dir, creating it. Entry names must
// be relative and stay inside dir (no "..", no absolute names), and
// extraction goes through an os.Root, so a symlink in the archive or
// already in dir cannot redirect a write outside of it.
func Untar(r io.Reader, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return classify("extract into", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return classify("extract into", dir, err)
	}
	defer root.Close()
	tr := tar.NewReader(r)
	type dirTime struct {
		name string
		t    time.Time
	}
	var dirs []dirTime
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return &Error{Code: client.CodeInvalid, Message: fmt.Sprintf("extract into %s: bad tar stream: %v", dir, err)}
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		clean := path.Clean(name)
		if name == "" || clean == "." {
			continue
		}
		if path.IsAbs(name) || clean != name || clean == ".." || strings.HasPrefix(clean, "../") {
			return &Error{Code: client.CodeInvalid, Message: fmt.Sprintf("extract into %s: unsafe name %q in archive", dir, hdr.Name)}
		}
		if err := extract(root, tr, hdr, clean); err != nil {
			return classify("extract into "+dir+":", clean, err)
		}
		if hdr.Typeflag == tar.TypeDir {
			dirs = append(dirs, dirTime{clean, hdr.ModTime})
		}
	}
	for _, d := range dirs {
		root.Chtimes(d.name, d.t, d.t)
	}
	return nil
}

func extract(root *os.Root, tr *tar.Reader, hdr *tar.Header, name string) error {
	mode := os.FileMode(hdr.Mode).Perm()
	if parent := path.Dir(name); parent != "." {
		if err := root.MkdirAll(parent, 0o755); err != nil {
			return err
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := root.Mkdir(name, mode); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		return root.Chmod(name, mode)
	case tar.TypeReg:
		// Replace rather than write through whatever is there (a symlink
		// would be followed otherwise, if only inside the root).
		if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, tr); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return root.Symlink(hdr.Linkname, name)
	default:
		return nil // devices, fifos, hard links: not carried
	}
	return root.Chtimes(name, hdr.ModTime, hdr.ModTime)
}
