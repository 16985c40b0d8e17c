// Package filecopy copies a file's bytes into a file it creates, and
// writes files durably. Template builds, the workspace skeleton and tests
// all copy single files; they share New so that each gets the same care:
// the destination is created, never opened through a symlink, and never
// truncated. Template builds, the object store, volumes and the
// write-ahead log of device images share WriteSynced and SyncDir, the
// fsyncs that make a small file and a directory's entries durable.
package filecopy

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// New copies src into a new file dst with permissions mode (less the
// umask). It fails with an error matching os.ErrExist if dst exists, a
// symlink included: a directory someone else can write may hold one, and
// following it would write somewhere else.
func New(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return nil
}
