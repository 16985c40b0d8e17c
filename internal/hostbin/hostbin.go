// Package hostbin finds the host programs the daemon runs as root (runc,
// slirp4netns, mount, mkfs.ext4, ...) in a fixed list of system
// directories, never through $PATH.
//
// A daemon running as root that runs a helper by name trusts every
// directory on its PATH: a directory early on it that something less
// trusted can write (a workspace mounted there by mistake, a user's
// ~/bin) turns into root on the host. So programs are looked up only in
// TrustedDirs, and a candidate is refused unless it and its directory
// belong to root and are writable by root alone (TrustedDirs).
package hostbin

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// TrustedDirs are the directories host programs are taken from, in order.
func TrustedDirs() []string { return []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"} }

// Path returns the absolute path of program name in TrustedDirs. name must
// be a bare name: a path is refused, so that callers cannot bypass the
// list by accident. Each call looks again (a stat per directory), so a
// program installed while the daemon runs is found; what is found is never
// decided by the environment.
func Path(name string) (string, error) {
	if name == "" || filepath.Base(name) != name {
		return "", fmt.Errorf("host program %q: not a bare program name", name)
	}
	var firstErr error
	for _, dir := range TrustedDirs() {
		p := filepath.Join(dir, name)
		err := trusted(p)
		if err == nil {
			return p, nil
		}
		if firstErr == nil && !os.IsNotExist(err) {
			firstErr = err
		}
	}
	if firstErr != nil {
		return "", firstErr
	}
	return "", fmt.Errorf("host program %s: not found in %v", name, TrustedDirs())
}

// trusted checks that the program at p (symlinks resolved: /sbin is a
// link to /usr/sbin on merged-/usr systems) is an executable regular file
// that only root can change, in a directory only root can change.
func trusted(p string) error {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return err
	}
	for _, q := range []string{filepath.Dir(real), real} {
		fi, err := os.Stat(q)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
			return fmt.Errorf("host program %s: %s is not owned by root and writable by root alone", p, q)
		}
	}
	fi, err := os.Stat(real)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("host program %s: not an executable file", p)
	}
	return nil
}
