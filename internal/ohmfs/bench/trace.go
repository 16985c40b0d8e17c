package bench

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// tracefsRoot is where tracefs is mounted on current kernels.
const tracefsRoot = "/sys/kernel/tracing"

// tracer counts FUSE requests and block requests during traced steps, with
// the kernel's tracepoints (fuse:fuse_request_send, block:block_rq_issue)
// in a tracefs instance of its own, so that nobody else's tracing is
// disturbed. The daemon's own counters would need a debug build; the
// tracepoints see every request and cost about a microsecond each.
type tracer struct {
	dir string // the instance; "" until first used
	err error  // why tracing is unavailable
}

func newTracer() *tracer { return &tracer{} }

func (t *tracer) instance() (string, error) {
	if t.dir != "" || t.err != nil {
		return t.dir, t.err
	}
	if _, err := os.Stat(filepath.Join(tracefsRoot, "instances")); err != nil {
		// Not mounted (a fresh boot without it): mount it.
		if err := unix.Mount("tracefs", tracefsRoot, "tracefs", 0, ""); err != nil {
			t.err = fmt.Errorf("mount tracefs: %w", err)
			return "", t.err
		}
	}
	for _, ev := range []string{"events/fuse/fuse_request_send", "events/block/block_rq_issue"} {
		if _, err := os.Stat(filepath.Join(tracefsRoot, ev)); err != nil {
			t.err = fmt.Errorf("this kernel has no %s tracepoint", filepath.Base(ev))
			return "", t.err
		}
	}
	dir := filepath.Join(tracefsRoot, "instances", fmt.Sprintf("ohm-bench-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		t.err = fmt.Errorf("make a tracing instance: %w", err)
		return "", t.err
	}
	t.dir = dir
	// Room for a few hundred thousand events per CPU.
	write(dir, "buffer_size_kb", "32768")
	return dir, nil
}

func (t *tracer) close() {
	if t.dir != "" {
		write(t.dir, "tracing_on", "0")
		os.Remove(t.dir)
	}
}

func write(dir, name, v string) error {
	return os.WriteFile(filepath.Join(dir, name), []byte(v), 0)
}

// traceRun is one traced step.
type traceRun struct {
	dir string
}

// start begins counting fs's requests; nil if fs has nothing to count or
// tracing is unavailable.
func (t *tracer) start(fs FS) *traceRun {
	if fs.Targets == nil {
		return nil
	}
	conn, blockDev := fs.Targets()
	if conn == 0 && blockDev == 0 {
		return nil
	}
	dir, err := t.instance()
	if err != nil {
		return nil
	}
	write(dir, "tracing_on", "0")
	write(dir, "trace", "")
	fuse, block := "events/fuse/fuse_request_send", "events/block/block_rq_issue"
	write(dir, fuse+"/enable", "0")
	write(dir, block+"/enable", "0")
	if conn != 0 {
		write(dir, fuse+"/filter", fmt.Sprintf("connection == %d", conn))
		write(dir, fuse+"/enable", "1")
	}
	if blockDev != 0 {
		// The tracepoint's dev is the kernel's dev_t: major << 20 | minor.
		dev := uint64(unix.Major(blockDev))<<20 | uint64(unix.Minor(blockDev))
		write(dir, block+"/filter", fmt.Sprintf("dev == %d", dev))
		write(dir, block+"/enable", "1")
	}
	write(dir, "tracing_on", "1")
	return &traceRun{dir: dir}
}

// stop ends the count and returns it by request kind. If the buffer
// overflowed, the count is short and "lost events" says so.
func (r *traceRun) stop() map[string]uint64 {
	write(r.dir, "tracing_on", "0")
	write(r.dir, "events/fuse/fuse_request_send/enable", "0")
	write(r.dir, "events/block/block_rq_issue/enable", "0")
	f, err := os.Open(filepath.Join(r.dir, "trace"))
	if err != nil {
		return nil
	}
	defer f.Close()
	counts := map[string]uint64{}
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		countLine(s.Text(), counts)
	}
	return counts
}

// countLine adds one line of the trace to counts.
func countLine(line string, counts map[string]uint64) {
	if strings.HasPrefix(line, "#") {
		// "# entries-in-buffer/entries-written: 1234/1240   #P:2"
		if _, rest, ok := strings.Cut(line, "entries-written:"); ok {
			var in, written uint64
			if n, _ := fmt.Sscanf(strings.TrimSpace(rest), "%d/%d", &in, &written); n == 2 && written > in {
				counts["lost events"] = written - in
			}
		}
		return
	}
	if _, rest, ok := strings.Cut(line, "fuse_request_send:"); ok {
		// "connection 40 req 12 opcode 16 (FUSE_WRITE) len 4176"
		if _, op, ok := strings.Cut(rest, "(FUSE_"); ok {
			if op, _, ok := strings.Cut(op, ")"); ok {
				counts[op]++
			}
		}
		return
	}
	if _, rest, ok := strings.Cut(line, "block_rq_issue:"); ok {
		// "7,3 WS 4096 () 123456 + 8 [kworker/...]"
		f := strings.Fields(rest)
		if len(f) < 2 {
			return
		}
		for _, kind := range blockKinds(f[1]) {
			counts[kind]++
		}
	}
}

// blockKinds reads a block request's rwbs: an F first is a preflush (a
// flush before the request), then the operation (F flush, W write, R read,
// D discard), then F for FUA. The loop device has no FUA, so the kernel
// sends FUA writes as a write and a flush.
func blockKinds(rwbs string) []string {
	var kinds []string
	if len(rwbs) > 1 && rwbs[0] == 'F' && strings.ContainsRune("FWRDN", rune(rwbs[1])) {
		kinds = append(kinds, "block flush")
		rwbs = rwbs[1:]
	}
	switch {
	case rwbs == "":
	case rwbs[0] == 'F':
		if len(kinds) == 0 {
			kinds = append(kinds, "block flush")
		}
	case rwbs[0] == 'W':
		kinds = append(kinds, "block write")
	case rwbs[0] == 'R':
		kinds = append(kinds, "block read")
	case rwbs[0] == 'D':
		kinds = append(kinds, "block discard")
	}
	return kinds
}

// StoreCounter returns a Stored function for a volume directory: the bytes
// written into it so far, counted as new files whole and grown files by
// their growth (a file volume's blocks are immutable files; its metadata
// database and replica grow). Until ohmfs counts its own writes, it is the
// measure of write amplification.
func StoreCounter(dir string) func() (uint64, error) {
	seen := map[string]int64{}
	var total uint64
	return func() (uint64, error) {
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return nil // removed by gc while walking
				}
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return nil
			}
			if prev, ok := seen[p]; !ok {
				total += uint64(fi.Size())
			} else if fi.Size() > prev {
				total += uint64(fi.Size() - prev)
			}
			seen[p] = fi.Size()
			return nil
		})
		return total, err
	}
}
