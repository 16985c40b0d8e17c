package watch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Defaults of Options.
const (
	DefaultWindow     = 50 * time.Millisecond
	DefaultBuffer     = 4096
	DefaultMaxPending = 16384
)

// Options configure a Feed.
type Options struct {
	// Root is the host path of the watched filesystem's mountpoint. It
	// must be a path only the host can change (its parents the host's):
	// it is the one path the feed opens by name.
	Root string
	// Prefix is the path Root has in the computer, e.g. /home/ohm.
	Prefix string
	// Path limits the feed to Path and what is below it (a path in the
	// computer, Prefix or under it; default Prefix). A move across its
	// edge is reported as the deletion or the creation it is from inside.
	Path string
	// Window is how long events are held to be coalesced per path.
	Window time.Duration
	// Buffer is how many events wait for a slow reader before the feed
	// drops them (and says so with an Overflow event).
	Buffer int
	// MaxPending bounds the distinct paths of one window.
	MaxPending int
}

// The events asked of the kernel: entries created, deleted and renamed
// (FAN_RENAME reports both names in one event), data and attributes
// changed, for directories too.
const markMask = unix.FAN_CREATE | unix.FAN_DELETE | unix.FAN_RENAME |
	unix.FAN_MODIFY | unix.FAN_ATTRIB | unix.FAN_ONDIR

// Feed is a running watch. Its events come on Events until Close, or until
// reading the kernel's queue fails (Err says why).
type Feed struct {
	opts     Options
	fan      *os.File // the fanotify group
	root     int      // Root, open: the anchor of every file handle
	rootLink string   // Root as /proc/self/fd names it
	events   chan Event
	done     chan struct{}

	mu      sync.Mutex
	closing bool
	err     error

	// Owned by run.
	window  []raw // the window's events, their directories not yet resolved
	co      *coalescer
	lost    int               // events dropped since the last Overflow sent
	lostWhy string            // and where; "" with lost == 0 and no kernel overflow
	batch   map[string]string // dir handle -> its path, this resolution pass
	known   map[string]string // dir handle -> last path it resolved to
}

// open makes a feed whose group is marked (the kernel queues events from
// here on) but not yet read: Open starts its reader.
func open(opts Options) (*Feed, error) {
	if opts.Path == "" {
		opts.Path = opts.Prefix
	}
	if !path.IsAbs(opts.Prefix) || !under(opts.Path, opts.Prefix) {
		return nil, fmt.Errorf("watch %s: not under %s", opts.Path, opts.Prefix)
	}
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.Buffer < 2 {
		opts.Buffer = DefaultBuffer
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultMaxPending
	}
	root, err := unix.Open(opts.Root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("watch: open %s: %w", opts.Root, err)
	}
	rootLink, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(root))
	if err != nil {
		unix.Close(root)
		return nil, fmt.Errorf("watch: %w", err)
	}
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|unix.FAN_REPORT_DFID_NAME_TARGET, unix.O_RDONLY|unix.O_LARGEFILE)
	if err != nil {
		unix.Close(root)
		return nil, fmt.Errorf("watch: fanotify_init: %w", err)
	}
	// Marked by descriptor, so that no name is looked up again.
	if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, markMask, root, ""); err != nil {
		unix.Close(fd)
		unix.Close(root)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EXDEV) {
			return nil, fmt.Errorf("watch: the filesystem at %s does not report file handles: %w", opts.Root, ErrUnsupported)
		}
		return nil, fmt.Errorf("watch: fanotify_mark %s: %w", opts.Root, err)
	}
	f := &Feed{
		opts: opts, fan: os.NewFile(uintptr(fd), "fanotify"), root: root, rootLink: rootLink,
		events: make(chan Event, opts.Buffer), done: make(chan struct{}),
		co: newCoalescer(opts.MaxPending), batch: map[string]string{}, known: map[string]string{},
	}
	return f, nil
}

// Open starts a feed of the changes under opts.Path. It needs
// CAP_SYS_ADMIN and a filesystem that reports file handles to fanotify
// (btrfs, ext4, XFS, tmpfs; not FUSE).
func Open(opts Options) (*Feed, error) {
	f, err := open(opts)
	if err != nil {
		return nil, err
	}
	go f.run()
	return f, nil
}

// ErrUnsupported is the error of Open on a filesystem fanotify cannot
// report file handles for.
var ErrUnsupported = errors.New("filesystem not supported")

// Events returns the feed's events. It is closed when the feed ends.
func (f *Feed) Events() <-chan Event { return f.events }

// Done is closed when the feed has ended and let go of the filesystem.
func (f *Feed) Done() <-chan struct{} { return f.done }

// Err is why the feed ended by itself, nil after Close.
func (f *Feed) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// Close ends the feed: what the kernel queued until now is still read and
// sent (as far as Buffer allows), then Events is closed. It returns once
// the feed holds nothing of the filesystem open, so that it can be
// unmounted.
func (f *Feed) Close() {
	// Under mu, so that run cannot set its own deadline over this one
	// after it last looked at closing.
	f.mu.Lock()
	f.closing = true
	f.fan.SetReadDeadline(time.Now()) // wakes run's read
	f.mu.Unlock()
	<-f.done
}

func (f *Feed) isClosing() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closing
}

// run reads the kernel's queue, coalesces and sends, until Close.
func (f *Feed) run() {
	defer func() {
		f.fan.Close()
		unix.Close(f.root)
		close(f.events)
		close(f.done)
	}()
	buf := make([]byte, 256<<10)
	var flushAt time.Time
	for {
		// Without anything waiting, block until the kernel has events.
		var deadline time.Time
		if len(f.window) > 0 || f.lostPending() {
			if flushAt.IsZero() {
				flushAt = time.Now().Add(f.opts.Window)
			}
			deadline = flushAt
		}
		f.mu.Lock()
		if f.closing {
			deadline = time.Now()
		}
		f.fan.SetReadDeadline(deadline)
		f.mu.Unlock()
		n, err := f.fan.Read(buf)
		if n > 0 {
			f.parse(buf[:n])
		}
		if f.isClosing() {
			f.drain(buf)
			f.flush()
			return
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			f.mu.Lock()
			f.err = fmt.Errorf("watch: read fanotify events: %w", err)
			f.mu.Unlock()
			f.flush()
			return
		}
		if !flushAt.IsZero() && !time.Now().Before(flushAt) || len(f.window) >= maxWindow(f.opts.MaxPending) {
			// Not reading the queue again first: a drain at each
			// window's end left the feed blind to later events now
			// and then (TestWatchBurst, about one run in 15), for a
			// reason not found yet.
			f.flush()
			flushAt = time.Time{}
		}
	}
}

// drain reads what the kernel still holds, without waiting. It reads the
// descriptor directly (Control, not Read), for a deadline set to end a
// window or by Close has passed and would stop Read before it reads.
func (f *Feed) drain(buf []byte) {
	rc, err := f.fan.SyscallConn()
	if err != nil {
		return
	}
	for {
		var n int
		var rerr error
		if err := rc.Control(func(fd uintptr) {
			n, rerr = unix.Read(int(fd), buf)
		}); err != nil || rerr != nil || n <= 0 {
			return
		}
		f.parse(buf[:n])
	}
}

// flush resolves the window's events (translate) and sends them,
// dropping (and counting) what does not fit in the buffer. One slot of the
// buffer is kept for the Overflow event, so that the signal to rescan is
// never lost.
func (f *Feed) flush() {
	f.translate()
	evs, dropped := f.co.take()
	if dropped > 0 {
		f.lose(dropped, "too many paths at once")
	}
	for _, e := range evs {
		// Nothing is sent after a loss until the Overflow event is, and
		// that goes early only if the reader has made room for more.
		if f.lostPending() && len(f.events) < cap(f.events)-2 {
			f.sendLost()
		}
		if f.lostPending() || len(f.events) >= cap(f.events)-1 {
			f.lose(1, "slow reader")
			continue
		}
		f.events <- e
	}
	f.sendLost()
}

// lose counts n dropped events.
func (f *Feed) lose(n int, why string) {
	f.lost += n
	if f.lostWhy == "" {
		f.lostWhy = why
	}
}

// lostPending reports whether a loss waits to be said.
func (f *Feed) lostPending() bool { return f.lost > 0 || f.lostWhy != "" }

// sendLost sends the Overflow event for what was lost, if anything was
// and the buffer has room.
func (f *Feed) sendLost() {
	if !f.lostPending() || len(f.events) >= cap(f.events) {
		return
	}
	f.events <- Event{Kind: Overflow, Path: f.opts.Path, Dir: true, Dropped: f.lost, Reason: f.lostWhy}
	f.lost, f.lostWhy = 0, ""
}

const metaLen = int(unsafe.Sizeof(unix.FanotifyEventMetadata{}))

// fid is a directory's file handle and a name in it, from an event's
// information record.
type fid struct {
	typ    int32
	handle []byte
	name   string
}

// parse adds the events of one read to the window.
func (f *Feed) parse(b []byte) {
	for len(b) >= metaLen {
		md := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&b[0]))
		size := int(md.Event_len)
		if size < metaLen || size > len(b) {
			return
		}
		ev := b[:size]
		b = b[size:]
		if md.Fd >= 0 {
			unix.Close(int(md.Fd)) // not asked for (fids are), but never leak one
		}
		if md.Mask&unix.FAN_Q_OVERFLOW != 0 {
			f.lose(0, "kernel queue")
			continue
		}
		var dfid, oldFid, newFid *fid
		for info := ev[md.Metadata_len:]; len(info) >= 4; {
			typ, l := info[0], int(binary.NativeEndian.Uint16(info[2:4]))
			if l < 4 || l > len(info) {
				break
			}
			rec := info[:l]
			info = info[l:]
			switch typ {
			case unix.FAN_EVENT_INFO_TYPE_DFID_NAME, unix.FAN_EVENT_INFO_TYPE_DFID:
				dfid = parseFid(rec)
			case unix.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME:
				oldFid = parseFid(rec)
			case unix.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME:
				newFid = parseFid(rec)
			}
		}
		f.window = append(f.window, raw{mask: md.Mask, dfid: dfid, oldFid: oldFid, newFid: newFid})
	}
}

// parseFid reads a record: header (4 bytes), fsid (8), file_handle
// (handle_bytes u32, handle_type i32, the handle), then for _NAME records
// a NUL-terminated name.
func parseFid(rec []byte) *fid {
	if len(rec) < 20 {
		return nil
	}
	hb := int(binary.NativeEndian.Uint32(rec[12:16]))
	if 20+hb > len(rec) {
		return nil
	}
	// The handle is kept past the read buffer's reuse: copied.
	fi := &fid{typ: int32(binary.NativeEndian.Uint32(rec[16:20])), handle: bytes.Clone(rec[20 : 20+hb])}
	name := rec[20+hb:]
	if i := strings.IndexByte(string(name), 0); i >= 0 {
		name = name[:i]
	}
	fi.name = string(name)
	return fi
}

// pathOf is the path in the computer of a record's directory and name.
func (f *Feed) pathOf(fi *fid) (string, bool) {
	if fi == nil {
		return "", false
	}
	d, ok := f.dirPath(fi)
	if !ok {
		return "", false
	}
	if fi.name == "" || fi.name == "." {
		return d, true
	}
	if strings.Contains(fi.name, "/") {
		return "", false // not a name the kernel gives; never made into a path
	}
	return path.Join(d, fi.name), true
}

// dirPath resolves a directory's file handle: open_by_handle_at against
// Root (O_PATH: nothing of the directory is read, no name is looked up),
// its path read from the descriptor, Root's part replaced by Prefix. A
// directory gone since (ESTALE, or deleted but still in the cache) takes
// the last path it had, if this feed saw it.
func (f *Feed) dirPath(fi *fid) (string, bool) {
	key := strconv.Itoa(int(fi.typ)) + ":" + string(fi.handle)
	if p, ok := f.batch[key]; ok {
		return p, true
	}
	p, ok := f.resolve(fi)
	if !ok {
		p, ok = f.known[key]
		return p, ok
	}
	f.batch[key] = p
	if len(f.known) >= 4096 {
		clear(f.known)
	}
	f.known[key] = p
	return p, true
}

func (f *Feed) resolve(fi *fid) (string, bool) {
	fd, err := unix.OpenByHandleAt(f.root, unix.NewFileHandle(fi.typ, fi.handle), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return "", false
	}
	defer unix.Close(fd)
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", false
	}
	// A directory removed before the Readlink has a link ending in
	// " (deleted)": a path that never was. Counted after the read, a link
	// count of 0 says so (a name that really ends so keeps its 1).
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Nlink == 0 || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", false
	}
	rel, ok := strings.CutPrefix(link, f.rootLink)
	if !ok || rel != "" && rel[0] != '/' {
		return "", false // not below Root (another mount of the filesystem)
	}
	return path.Join(f.opts.Prefix, rel), true
}

// under reports whether p is dir or below it.
func under(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}
