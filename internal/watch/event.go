// Package watch reports the changes made under a directory of a mounted
// filesystem as a feed of events: files and directories created,
// modified, deleted and moved, with paths as the computer that owns the
// filesystem sees them. It reads a fanotify group with a filesystem mark
// (fanotify.go), coalesces bursts per path (coalesce.go) and never holds
// the writer up: when its reader falls behind, it drops events and says so
// with an Overflow event, after which a client should rescan.
//
// The host side never follows a path the computer can write: a directory
// named by an event is opened from its file handle (O_PATH, against the
// filesystem's root) and its path read from the descriptor; no name the
// computer chose is ever resolved.
package watch

// Kind is what happened to a path.
type Kind string

// The kinds of events a feed reports.
const (
	// Created: the path names a new file or directory (it may replace one
	// deleted at the same path within the coalescing window).
	Created Kind = "created"
	// Modified: the file's data or attributes changed.
	Modified Kind = "modified"
	// Deleted: the path no longer exists. The files of a deleted directory
	// may be reported by the directory's deletion alone.
	Deleted Kind = "deleted"
	// Moved: OldPath was renamed to Path.
	Moved Kind = "moved"
	// Overflow: events were dropped (Dropped of them, 0 when the kernel's
	// queue overflowed and the count is unknown); rescan to catch up.
	Overflow Kind = "overflow"
)

// Event is one change.
type Event struct {
	Kind    Kind
	Path    string // in the computer; for Moved, the new path
	OldPath string // Moved only: the path before
	Dir     bool   // the path is a directory
	Dropped int    // Overflow only: how many events were lost, if known
	// Reason says, for Overflow, where the events were lost: "kernel
	// queue" or "slow reader".
	Reason string
}
