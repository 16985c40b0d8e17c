package fusefs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"ohm/internal/ohmfs/volume"
)

// A FUSE connection can outlive the process serving it. The kernel keeps
// the connection as long as one descriptor of its /dev/fuse file is open,
// so a small keeper process that holds one (package mount) lets a server
// die, be killed or be replaced without the mount going away: the kernel
// filesystems, loop devices and processes on top only wait. A new server
// resumes the connection (Resume): it must not expect a second INIT (the
// kernel sent the only one to the first server, which answered it), and it
// asks the kernel to send again what the dead server had read but not
// answered (FUSE_NOTIFY_RESEND, Linux 6.9). Node ids are inode numbers and
// file handles are looked up by inode when unknown, so every id the
// kernel holds means the same to the new server. See docs/fuse-restart.md.

// Conn is a FUSE connection attached at a mountpoint, not served yet.
type Conn struct {
	// File is the connection's /dev/fuse descriptor.
	File *os.File
	// Dev is the mount's device number; its minor names the connection.
	Dev uint64
	// Mountpoint is the absolute mountpoint.
	Mountpoint string
}

// Attach mounts a new FUSE connection at mountpoint (see Mount for the
// path rules) and returns it without serving it: the kernel's INIT waits
// in the connection for the first server (Resume with no init). Undo with
// Detach of the mountpoint.
func Attach(mountpoint string, opts Options) (*Conn, error) {
	fd, dev, mp, err := attach(mountpoint, opts)
	if err != nil {
		return nil, err
	}
	return &Conn{File: os.NewFile(uintptr(fd), "/dev/fuse"), Dev: dev, Mountpoint: mp}, nil
}

// attach mounts a new FUSE connection at mountpoint, through a descriptor
// of the mountpoint (mountpoint.go), and returns its /dev/fuse descriptor,
// its device and the cleaned mountpoint. Nothing serves it yet.
func attach(mountpoint string, opts Options) (fd int, dev uint64, mp string, err error) {
	mp = filepath.Clean(mountpoint)
	dir, err := OpenMountpoint(mp)
	if err != nil {
		return -1, 0, "", fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	defer dir.Close()
	if fstype, ok, err := mountedOn(dir); err != nil {
		return -1, 0, "", fmt.Errorf("mount %s: %w", mountpoint, err)
	} else if ok {
		return -1, 0, "", fmt.Errorf("mount %s: %w (%s already mounted there)", mountpoint, ErrBusy, fstype)
	}
	fd, err = unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, 0, "", fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	dev, err = mountFUSE(fd, dir, opts)
	if err != nil {
		unix.Close(fd)
		return -1, 0, "", fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	return fd, dev, mp, nil
}

// Resume serves vol on the FUSE connection whose /dev/fuse descriptor is
// fd (taken over: it is closed when the mount ends) at mountpoint, device
// dev. With init nil the connection is new and its INIT is answered here;
// otherwise init is what KernelInit returned in the connection's first
// server, and the connection is taken over as it is: the server starts as
// if it had answered that INIT itself, with the same options, and the
// kernel is told to send again every request a dead server had not
// answered. opts must be those of the first server.
func Resume(ctx context.Context, vol *volume.Volume, mountpoint string, dev uint64, fd int, init []byte, opts Options) (*Mounted, error) {
	if init == nil {
		return serve(ctx, vol, filepath.Clean(mountpoint), dev, fd, nil, opts)
	}
	if len(init) != int(unsafe.Sizeof(fuse.InitIn{})) {
		unix.Close(fd)
		return nil, fmt.Errorf("resume %s: the saved INIT has %d bytes, want %d", mountpoint, len(init), unsafe.Sizeof(fuse.InitIn{}))
	}
	return serve(ctx, vol, filepath.Clean(mountpoint), dev, fd, init, opts)
}

// KernelInit returns the INIT request the kernel sent the connection's
// first server, as the kernel sent it: what Resume needs to start a later
// server in the same state.
func (m *Mounted) KernelInit() []byte {
	ks := m.server.KernelSettings()
	if ks == nil {
		return nil
	}
	b := make([]byte, unsafe.Sizeof(*ks))
	copy(b, unsafe.Slice((*byte)(unsafe.Pointer(ks)), len(b)))
	return b
}

// replayInit makes go-fuse's server start on an initialised connection.
// go-fuse reads an INIT from its descriptor before it serves anything, and
// offers no way around that; so it is given a socket at first, from which
// it reads the saved INIT (and to which it answers), and the socket's
// descriptor number is then made the connection's (dup3) before the server
// reads anything else. It returns the descriptor to hand go-fuse and a
// function that switches it to fuseFD once go-fuse has answered.
func replayInit(fuseFD int, init []byte) (fd int, switchover func() error, err error) {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, fmt.Errorf("replay INIT: %w", err)
	}
	req := append([]byte(nil), init...)
	// The header the kernel wrote is kept but for the id: the answer
	// goes to the socket, never to the kernel.
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint64(req[8:], 1)
	if _, err := unix.Write(sp[1], req); err != nil {
		unix.Close(sp[0])
		unix.Close(sp[1])
		return -1, nil, fmt.Errorf("replay INIT: %w", err)
	}
	return sp[0], func() error {
		defer unix.Close(sp[1])
		// go-fuse answered the INIT on the socket before NewServer
		// returned; the answer is dropped with the socket.
		if err := unix.Dup3(fuseFD, sp[0], unix.O_CLOEXEC); err != nil {
			return fmt.Errorf("take over the FUSE connection: %w", err)
		}
		return unix.Close(fuseFD)
	}, nil
}

// notifyResend is FUSE_NOTIFY_RESEND (include/uapi/linux/fuse.h): the
// kernel puts every request a server has read and not answered back in
// the queue, marked with FUSE_UNIQUE_RESEND in its id.
const notifyResend = 7

// resend asks the kernel to send again what the connection's earlier
// server read and did not answer.
func resend(fd int) error {
	var hdr [16]byte // fuse_out_header: len, error (the notify code), unique 0
	binary.NativeEndian.PutUint32(hdr[0:], uint32(len(hdr)))
	binary.NativeEndian.PutUint32(hdr[4:], uint32(int32(notifyResend)))
	_, err := unix.Write(fd, hdr[:])
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("FUSE_NOTIFY_RESEND: %w (needs Linux 6.9)", err)
	}
	if err != nil {
		return fmt.Errorf("FUSE_NOTIFY_RESEND: %w", err)
	}
	return nil
}
