//go:build linux

package crash

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"

	"ohm/internal/filecopy"
)

// sizes the workload writes: empty, tiny, around page and block edges, large.
var sizes = []int{0, 1, 100, 4095, 4096, 4097, 65536, 1<<20 + 7, 4 << 20, 5<<20 + 3}

// workload runs until it is killed (or its filesystem goes away) in dir.
// Every file it fsyncs (with its directory) is logged to logPath, on
// another filesystem, as "path size sha256", and never touched again; the
// log is fsynced after each entry. Files in dir/seq are created in order,
// never fsynced, never removed. Everything in dir/scratch is churn.
func workload(dir, logPath string, seed int64) error {
	rng := rand.New(rand.NewSource(seed))
	for _, d := range []string{dir, filepath.Join(dir, "synced"), filepath.Join(dir, "seq"), filepath.Join(dir, "scratch")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	// The directories must be durable for the fsynced files' names to be.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := filecopy.SyncDir(d); err != nil {
			return err
		}
	}
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	// Logged paths are relative to the mountpoint.
	rel := func(p string) string {
		r, _ := filepath.Rel(filepath.Dir(dir), p)
		return r
	}

	buf := make([]byte, 6<<20)
	seq, synced := 0, 0
	for {
		switch op := rng.Intn(10); {
		case op < 3: // an fsynced file, written in place or through a rename
			synced++
			size := sizes[rng.Intn(len(sizes))]
			data := buf[:size]
			rng.Read(data)
			final := filepath.Join(dir, "synced", fmt.Sprintf("f%05d", synced))
			target := final
			viaRename := rng.Intn(2) == 0
			if viaRename {
				target = filepath.Join(dir, "scratch", fmt.Sprintf("tmp%05d", synced))
			}
			if err := writeSynced(target, data, rng); err != nil {
				return err
			}
			if viaRename {
				if err := os.Rename(target, final); err != nil {
					return err
				}
				if err := filecopy.SyncDir(filepath.Join(dir, "scratch")); err != nil {
					return err
				}
			}
			if err := filecopy.SyncDir(filepath.Join(dir, "synced")); err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			if _, err := fmt.Fprintf(log, "%s %d %s\n", rel(final), size, hex.EncodeToString(sum[:])); err != nil {
				return err
			}
			if err := log.Sync(); err != nil {
				return err
			}
		case op < 5: // an ordered create, never fsynced
			if err := os.WriteFile(filepath.Join(dir, "seq", fmt.Sprint(seq)), []byte(seqContent(seq)), 0o644); err != nil {
				return err
			}
			seq++
		default: // churn
			if err := churn(filepath.Join(dir, "scratch"), rng, buf); err != nil {
				return err
			}
		}
	}
}

func writeSynced(path string, data []byte, rng *rand.Rand) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	// Write in uneven pieces, as programs do.
	for off := 0; off < len(data); {
		n := min(len(data)-off, 1+rng.Intn(2<<20))
		if _, err := f.Write(data[off : off+n]); err != nil {
			f.Close()
			return err
		}
		off += n
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// churn does one random unlogged operation in dir.
func churn(dir string, rng *rand.Rand, buf []byte) error {
	name := func() string { return filepath.Join(dir, fmt.Sprintf("s%02d", rng.Intn(40))) }
	switch rng.Intn(8) {
	case 0, 1: // create or overwrite
		data := buf[:sizes[rng.Intn(len(sizes))]]
		rng.Read(data[:min(len(data), 4096)])
		return ignoreExist(os.WriteFile(name(), data, 0o644))
	case 2: // partial overwrite in the middle
		f, err := os.OpenFile(name(), os.O_WRONLY, 0)
		if err != nil {
			return nil
		}
		defer f.Close()
		_, err = f.WriteAt(buf[:rng.Intn(200000)], int64(rng.Intn(3<<20)))
		return err
	case 3: // rename, often over another file
		return ignoreExist(os.Rename(name(), name()))
	case 4:
		return ignoreExist(os.Remove(name()))
	case 5:
		return ignoreExist(os.Truncate(name(), int64(rng.Intn(2<<20))))
	case 6: // a directory with a file in it, then maybe gone again
		d := filepath.Join(dir, fmt.Sprintf("d%02d", rng.Intn(10)))
		if err := os.Mkdir(d, 0o755); err == nil {
			return os.WriteFile(filepath.Join(d, "f"), buf[:100], 0o644)
		}
		return ignoreExist(os.RemoveAll(d))
	default:
		return ignoreExist(os.Link(name(), name()))
	}
}

// ignoreExist ignores the errors random names bring (missing source,
// existing target, a dir where a file was chosen); anything else, such as
// the filesystem going away, stops the workload.
func ignoreExist(err error) error {
	for _, e := range []syscall.Errno{syscall.ENOENT, syscall.EEXIST, syscall.EISDIR, syscall.ENOTDIR, syscall.ENOTEMPTY} {
		if errors.Is(err, e) {
			return nil
		}
	}
	return err
}
