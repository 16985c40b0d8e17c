package disk

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Leftover is a loop device Cleanup detached.
type Leftover struct {
	Device  string // /dev/loopN
	Backing string // its backing file, as the kernel named it
}

// Cleanup detaches the loop devices this package attached that a crash
// left behind: the process that attached them is gone and nothing holds
// them (no mounted filesystem, no mkfs), typically because it died between
// attaching a device and mounting it, or because the storage under a
// mount went away and the mount was detached. Devices of other programs
// are never touched, nor devices that are mounted (Open takes those
// over). A daemon runs it when it starts.
func Cleanup(ctx context.Context) ([]Leftover, error) {
	loops, err := boundLoops()
	if err != nil {
		return nil, err
	}
	var done []Leftover
	var errs []error
	for _, l := range loops {
		if ctx.Err() != nil {
			return done, ctx.Err()
		}
		pid, _, _ := parseLoopTag(l.tag)
		if processAlive(pid) || l.busy() {
			continue
		}
		if err := detach(l.loopDev); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, Leftover{Device: l.path(), Backing: l.backing})
	}
	return done, errors.Join(errs...)
}

// cleanupImage detaches the loop devices of one image (by its key or its
// backing file) that nothing holds. Its caller holds the image's lock, so
// no other Disk is setting one of them up, whoever attached it.
func cleanupImage(key string, img *unix.Stat_t) error {
	loops, err := boundLoops()
	if err != nil {
		return err
	}
	for _, l := range loops {
		_, k, _ := parseLoopTag(l.tag)
		same := l.device == img.Dev && l.inode == img.Ino
		if k != key && !same {
			continue
		}
		if l.busy() {
			if same {
				return fmt.Errorf("disk image is still attached to %s, which something holds (mounted elsewhere?): %w", l.path(), ErrInUse)
			}
			continue
		}
		if err := detach(l.loopDev); err != nil {
			return err
		}
	}
	return nil
}

func detach(l loopDev) error {
	dev, err := os.OpenFile(l.path(), os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("open %s: %w", l.path(), err)
	}
	return detachLoop(dev)
}
