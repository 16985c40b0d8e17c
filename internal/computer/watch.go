package computer

import (
	"context"
	"path"
	"sync"

	"ohm/internal/mountinfo"
	changes "ohm/internal/watch"
)

// WorkspaceHome is where the workspace is in a computer.
const WorkspaceHome = "/home/ohm"

// Feed is a watch of a running computer's workspace (package watch): its
// events come on Events until the client closes it or the computer stops
// (the manager ends every feed of a computer before it unmounts the
// workspace, which a feed would otherwise hold busy). A feed is no
// activity: it does not keep a computer from being stopped as idle.
type Feed struct {
	*changes.Feed
	m    *Manager
	name string

	mu    sync.Mutex
	ended string
}

// Ended says why the feed ended, once Events is closed: why the computer
// stopped, or "" if the client closed it (or reading failed: see Err).
func (f *Feed) Ended() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ended
}

// Close ends the feed and lets go of the workspace.
func (f *Feed) Close() {
	f.m.mu.Lock()
	delete(f.m.feeds[f.name], f)
	f.m.mu.Unlock()
	f.Feed.Close()
}

// WatchOptions tune a feed; the zero value is watch's defaults.
type WatchOptions struct {
	Buffer int // events held for a slow reader (watch.DefaultBuffer)
}

// Watch starts a feed of the changes under p (a path in the computer:
// WorkspaceHome, the default, or below it) of running computer name. It
// needs the block layout: fanotify reports file handles of the workspace's
// btrfs, not of the file layout's FUSE mount.
func (m *Manager) Watch(ctx context.Context, name, p string, opts WatchOptions) (*Feed, error) {
	if p == "" {
		p = WorkspaceHome
	}
	if !path.IsAbs(p) {
		return nil, invalidf("watch %q: the path must be absolute", p)
	}
	p = path.Clean(p)
	if p != WorkspaceHome && !hasDirPrefix(p, WorkspaceHome) {
		return nil, invalidf("watch %s: only the workspace (%s and below) can be watched", p, WorkspaceHome)
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	unlock := m.lock(name)
	defer unlock()
	rec, err := m.reg.get(ctx, name)
	if err != nil {
		return nil, err
	}
	if rec, err = m.reapIfDead(ctx, rec); err != nil {
		return nil, err
	}
	if rec.State != StateRunning || m.live(name) == nil {
		return nil, statef("computer %q is not running (it is %s): start it to watch its workspace", name, rec.State)
	}
	bp := blockPaths{m.dir(name)}
	if !mountinfo.IsMountpoint(bp.diskMount()) {
		return nil, statef("computer %q has the file layout (its workspace predates the block layout): watch needs the block layout", name)
	}
	wf, err := changes.Open(changes.Options{Root: bp.diskMount(), Prefix: WorkspaceHome, Path: p, Buffer: opts.Buffer})
	if err != nil {
		return nil, err
	}
	f := &Feed{Feed: wf, m: m, name: name}
	m.mu.Lock()
	if m.feeds == nil {
		m.feeds = map[string]map[*Feed]struct{}{}
	}
	if m.feeds[name] == nil {
		m.feeds[name] = map[*Feed]struct{}{}
	}
	m.feeds[name][f] = struct{}{}
	m.mu.Unlock()
	return f, nil
}

// endFeeds ends the feeds of computer name, whose lock the caller holds,
// before its workspace is unmounted; reason is why.
func (m *Manager) endFeeds(name, reason string) {
	m.mu.Lock()
	feeds := m.feeds[name]
	delete(m.feeds, name)
	m.mu.Unlock()
	for f := range feeds {
		f.mu.Lock()
		f.ended = reason
		f.mu.Unlock()
		f.Feed.Close()
	}
}

func hasDirPrefix(p, dir string) bool {
	return len(p) > len(dir) && p[:len(dir)] == dir && p[len(dir)] == '/'
}
