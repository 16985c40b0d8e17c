package volume

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// lockFile is the volume's single-writer lock: an flock(2) on <dir>/lock,
// which the kernel releases when the holder dies however it dies, so a
// stale holder never blocks a volume. The file holds the Holder as JSON for
// messages and status.
type lockFile struct {
	f *os.File
}

// acquire takes the lock at path for h (its PID and Since are filled in),
// or fails with a *BusyError naming the current holder.
func acquire(url, path string, h Holder) (*lockFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock volume %s: %w", url, err)
	}
	// A status check holds a shared lock for a few microseconds; retry
	// briefly so that it never makes an open fail.
	err = flock(f, unix.LOCK_EX|unix.LOCK_NB)
	for i := 0; i < 5 && errors.Is(err, unix.EWOULDBLOCK); i++ {
		time.Sleep(10 * time.Millisecond)
		err = flock(f, unix.LOCK_EX|unix.LOCK_NB)
	}
	if err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder, _ := readHolder(path)
			return nil, &BusyError{URL: url, Holder: holder}
		}
		return nil, fmt.Errorf("lock volume %s: %w", url, err)
	}
	h.PID = os.Getpid()
	h.Since = time.Now().UTC().Truncate(time.Second)
	b, _ := json.Marshal(h)
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt(append(b, '\n'), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock volume %s: record holder: %w", url, err)
	}
	return &lockFile{f: f}, nil
}

// release empties the holder record and drops the lock.
func (l *lockFile) release() {
	l.f.Truncate(0)
	l.f.Close() // closing the last descriptor releases the flock
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}

// held reports whether some process holds the lock at path, and who.
func held(path string) (bool, *Holder, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil, nil
	}
	if err != nil {
		return false, nil, err
	}
	defer f.Close()
	// A shared lock conflicts only with the holder's exclusive one; drop
	// it at once so that a mount starting now is not refused because of us.
	err = flock(f, unix.LOCK_SH|unix.LOCK_NB)
	if err == nil {
		flock(f, unix.LOCK_UN)
		return false, nil, nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		return false, nil, err
	}
	h, _ := readHolder(path)
	return true, h, nil
}

func readHolder(path string) (*Holder, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var h Holder
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, err
	}
	return &h, nil
}
