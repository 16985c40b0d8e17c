package filecopy

import "os"

// WriteSynced writes data to path (created with permissions perm less
// the umask, or truncated) and fsyncs it before closing it, so that
// once it returns the bytes survive a crash. The directory entry is not
// synced: a caller that created the file syncs its directory with
// SyncDir. path is opened as given: it must not be in a directory a
// less trusted writer can change.
func WriteSynced(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// SyncDir fsyncs directory dir, making the entries created or removed in
// it durable. The object store does after each Put; the volume, the
// write-ahead log of device images and template builds need the same
// for their own files.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
