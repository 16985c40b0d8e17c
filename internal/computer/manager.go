// Package computer manages the computers of one data directory: their
// registry (SQLite, <dataDir>/ohm.db), names, workspaces and lifecycle
// (create, start, stop, delete, exec), on top of internal/sandbox and
// internal/template.
//
// Layout of a computer under the data directory:
//
//	computers/<name>/sandbox    the sandbox's StateDir (root disk, runc state, agent socket)
//	computers/<name>/workspace  the workspace volume (ohmfs)
//	computers/<name>/mnt        a read-only, shared bind mount of itself while running: the computer's /home, as its slave
//	computers/<name>/mnt/ohm    where the workspace is mounted on the host while running: the computer's /home/ohm
package computer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"ohm/internal/mountinfo"
	"ohm/internal/sandbox"
	"ohm/internal/template"
)

// Defaults for a new computer.
const (
	DefaultTemplate = "coding-agent"
	DefaultCPUs     = 2
	DefaultMemoryMB = 2048
	DefaultPIDs     = 4096
)

// stopGrace is how long processes get between SIGTERM and SIGKILL at stop.
const stopGrace = 10 * time.Second

// homeUID is the uid (and gid) of the user ohm, who owns the workspace.
const homeUID = 1000

// Options configure a Manager.
type Options struct {
	DataDir string
	// Exe is the ohm binary: the workspace mounts run it (`ohm fs ...`) and
	// it is every computer's init (`ohm agent`). Default: os.Executable.
	Exe       string
	Workspace Workspace // default: NewBlockWorkspace(Exe)
	Templates Templates // default: template.NewStore(DataDir)
	Logf      func(format string, args ...any)
	// Resolvers are the DNS servers ("host:port") computers' DNS proxies
	// forward allowed names to; empty means the host's.
	Resolvers []string
	// MinIdleTimeout is the shortest idle timeout accepted (default: one
	// minute); tests lower it to see idle stops in seconds.
	MinIdleTimeout time.Duration
	// Store, if set, is an S3 prefix (s3://bucket/prefix) that new
	// computers get their workspace volumes under, so that their disks
	// outlive the host (store.go; credentials and endpoint from the AWS_*
	// environment). Empty: file volumes in the data directory. Either
	// way, existing computers keep the volumes they were made with.
	Store string

	sandboxes sandboxes // default: internal/sandbox; tests inject failures
}

// Manager owns the computers under a data directory. Its methods are safe
// for concurrent use; operations on one computer serialize.
type Manager struct {
	dataDir string
	exe     string
	reg     *registry
	ws      Workspace
	tmpl    Templates
	rt      sandboxes
	logf    func(format string, args ...any)
	// resolvers: Options.Resolvers
	resolvers []string
	store     string    // Options.Store
	roots     rootDisks // root disks in the computers' volumes (rootdisk.go)

	mu      sync.Mutex           // guards the fields below and name choice
	locks   map[string]*nameLock // per computer, while in use
	running map[string]*live
	feeds   map[string]map[*Feed]struct{} // open watches, by computer (watch.go)

	idle *idleState // idle stop's countdowns (idle.go)

	stopSupervisor func() // ends the workspace supervisor and waits for it

	closing   chan struct{} // closed by Close: the init watchers return
	closeOnce sync.Once
	watchers  sync.WaitGroup // the init watchers
}

// live is a computer whose sandbox this manager holds.
type live struct {
	inst  instance
	shell string // the template's shell: /bin/bash or /bin/sh
}

// Open opens the manager of dataDir, creating the directory if needed, and
// reconciles the registry with what is actually running: a computer
// recorded running whose sandbox is gone (the host rebooted, it crashed) is
// cleaned up and marked stopped; a half-created one is removed.
func Open(ctx context.Context, opts Options) (*Manager, error) {
	if opts.DataDir == "" {
		return nil, errors.New("no data directory")
	}
	if err := os.MkdirAll(filepath.Join(opts.DataDir, "computers"), 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	m := &Manager{
		dataDir:   opts.DataDir,
		exe:       opts.Exe,
		ws:        opts.Workspace,
		tmpl:      opts.Templates,
		rt:        opts.sandboxes,
		logf:      opts.Logf,
		resolvers: opts.Resolvers,
		store:     opts.Store,
		locks:     map[string]*nameLock{},
		running:   map[string]*live{},
		idle:      newIdleState(opts.MinIdleTimeout),
		closing:   make(chan struct{}),
	}
	if m.exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the ohm binary: %w", err)
		}
		m.exe = exe
	}
	if m.ws == nil {
		m.ws = NewBlockWorkspace(m.exe)
	}
	if err := checkStore(m.store, m.ws); err != nil {
		return nil, err
	}
	if bw, ok := m.ws.(*BlockWorkspace); ok {
		bw.locate = m.volumeURL
	}
	if m.tmpl == nil {
		m.tmpl = template.NewStore(opts.DataDir)
	}
	if m.rt == nil {
		m.rt = sandboxRuntime{}
	}
	if m.logf == nil {
		m.logf = log.Printf
	}
	reg, err := openRegistry(ctx, filepath.Join(opts.DataDir, "ohm.db"))
	if err != nil {
		return nil, err
	}
	m.reg = reg
	m.thawLeftovers(ctx)
	if err := m.reconcile(ctx); err != nil {
		reg.close()
		return nil, err
	}
	m.startSupervisor()
	return m, nil
}

// Close stops supervising workspaces and watching inits, and closes the
// registry. Running computers keep running; a new Manager attaches to
// them.
func (m *Manager) Close() error {
	m.closeIdle()
	m.stopSupervisor()
	m.closeOnce.Do(func() { close(m.closing) })
	m.watchers.Wait()
	m.mu.Lock()
	for _, l := range m.running {
		l.inst.Release()
	}
	m.mu.Unlock()
	// The workspaces stay mounted for the computers that keep running; a
	// layout that holds them open lets them go for the next manager.
	err := m.roots.release()
	if r, ok := m.ws.(interface{ Release() error }); ok {
		err = errors.Join(err, r.Release())
	}
	return errors.Join(err, m.reg.close())
}

// nameLock serializes the operations on one computer. The manager keeps
// it in m.locks only while someone holds it or waits for it (refs), so
// the map holds the computers in use, not every name ever asked about.
type nameLock struct {
	m    *Manager
	name string
	mu   sync.Mutex
	refs int // holders and waiters through Manager.lock; guarded by m.mu
}

// TryLock takes l if it is free and still the lock of its computer (one
// dropped from the map meanwhile is stale: a new one may be in use).
func (l *nameLock) TryLock() bool {
	if !l.mu.TryLock() {
		return false
	}
	l.m.mu.Lock()
	current := l.m.locks[l.name] == l
	l.m.mu.Unlock()
	if !current {
		l.mu.Unlock()
	}
	return current
}

// Unlock releases a lock taken with TryLock.
func (l *nameLock) Unlock() { l.mu.Unlock() }

// lockOf returns the lock of computer name, for TryLock.
func (m *Manager) lockOf(name string) *nameLock {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.locks[name]
	if !ok {
		l = &nameLock{m: m, name: name}
		m.locks[name] = l
	}
	return l
}

// lock takes the lock of computer name and returns its release. The last
// release drops the lock from the map, before unlocking, so that a TryLock
// on the dropped lock fails rather than running beside a new one.
func (m *Manager) lock(name string) func() {
	m.mu.Lock()
	l, ok := m.locks[name]
	if !ok {
		l = &nameLock{m: m, name: name}
		m.locks[name] = l
	}
	l.refs++
	m.mu.Unlock()
	l.mu.Lock()
	return func() {
		m.mu.Lock()
		l.refs--
		if l.refs == 0 && m.locks[name] == l {
			delete(m.locks, name)
		}
		m.mu.Unlock()
		l.mu.Unlock()
	}
}

func (m *Manager) live(name string) *live {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.running[name]
}

// setLive records l as the sandbox of name (nil: none) and, for a new
// one, starts watching its init.
func (m *Manager) setLive(name string, l *live) {
	if l == nil {
		m.idleStopped(name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if l == nil {
		delete(m.running, name)
		return
	}
	m.running[name] = l
	m.watchers.Add(1)
	go func() {
		defer m.watchers.Done()
		select {
		case <-m.closing:
			return
		case <-l.inst.Ended():
		}
		m.initEnded(name, l)
	}()
}

// initEnded handles the end of the init of name's sandbox l: unless the
// manager stopped it itself, the computer is dead inside (every process
// of a PID namespace dies with its init), so it is stopped for real, the
// way Stop does it (its mounts torn down, its workspace flushed), and the
// reason recorded. The next run starts it again.
func (m *Manager) initEnded(name string, l *live) {
	unlock := m.lock(name)
	defer unlock()
	if m.live(name) != l {
		l.inst.Release() // stopped (or replaced) by the manager meanwhile
		return
	}
	m.reapDead(context.Background(), name, l)
}

// reapDead stops computer name, whose lock the caller holds and whose init
// (of sandbox l) has ended.
func (m *Manager) reapDead(ctx context.Context, name string, l *live) {
	reason := l.inst.EndReason()
	m.logf("%s: %s; stopping it", name, reason)
	rec, err := m.reg.get(ctx, name)
	if err != nil {
		m.logf("%s: %v", name, err)
		return
	}
	if err := m.stop(ctx, rec, reason); err != nil {
		m.logf("%s: stop after its init ended: %v", name, err)
	}
	l.inst.Release()
}

// ended reports whether sandbox l's init has ended.
func ended(l *live) bool {
	select {
	case <-l.inst.Ended():
		return true
	default:
		return false
	}
}

func (m *Manager) dir(name string) string { return filepath.Join(m.dataDir, "computers", name) }
func (m *Manager) volume(name string) string {
	return filepath.Join(m.dir(name), "workspace")
}
func (m *Manager) home(name string) string { return filepath.Join(m.homeMount(name), "ohm") }

// homeMount is the host directory bound at the computer's /home.
func (m *Manager) homeMount(name string) string { return filepath.Join(m.dir(name), "mnt") }

// legacyHome is where computers made before the shared /home mount had
// their workspace mounted; stop and delete still unmount it.
func (m *Manager) legacyHome(name string) string { return filepath.Join(m.dir(name), "home") }

func (m *Manager) spec(rec Record, templateRoot string) sandbox.Spec {
	env := make([]string, 0, len(rec.Env))
	for k, v := range rec.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	cpus, memMB, _ := boundedLimits(rec)
	return sandbox.Spec{
		Name:         rec.Name,
		StateDir:     filepath.Join(m.dir(rec.Name), "sandbox"),
		TemplateRoot: templateRoot,
		DiskSizeMB:   rec.DiskSizeMB,
		DiskMounted:  m.rootInVolume(rec.Name),
		Workspace:    m.home(rec.Name),
		HomeMount:    m.homeMount(rec.Name),
		CPUs:         cpus,
		MemoryMB:     memMB,
		PIDs:         rec.PIDs,
		Env:          env,
		Network:      rec.Network,
		Egress:       egressOf(rec),
		Resolvers:    m.resolvers,
		AgentBinary:  m.exe,
	}
}

// builtRoot returns the root of template name if it is built, without
// building it ("" otherwise).
func (m *Manager) builtRoot(ctx context.Context, name string) string {
	return m.builtInfo(ctx, name).Root
}

// builtInfo returns template name if it is built (a zero Info otherwise).
func (m *Manager) builtInfo(ctx context.Context, name string) template.Info {
	infos, err := m.tmpl.List(ctx)
	if err != nil {
		return template.Info{}
	}
	for _, t := range infos {
		if t.Name == name && t.Built {
			return t
		}
	}
	return template.Info{}
}

// shellOf is the shell commands run through in a computer of template
// name: the one its manifest names, or bash if its root has it.
func (m *Manager) shellOf(ctx context.Context, name, root string) string {
	if info := m.builtInfo(ctx, name); info.Shell != "" {
		return info.Shell
	}
	if hasBash(root) {
		return "/bin/bash"
	}
	return "/bin/sh"
}

// CreateOptions describe a new computer. Zero values take the defaults.
type CreateOptions struct {
	Name       string // "" picks a free friendly name
	Template   string
	DiskSizeMB int
	CPUs       float64
	MemoryMB   int
	Env        map[string]string
	Network    bool // outbound access beyond loopback (slirp4netns)
	// AllowHosts and AllowCIDRs limit that access (internal/egress); with
	// either set the computer gets a network even without Network.
	AllowHosts []string
	AllowCIDRs []string
	Progress   io.Writer // template build progress, when create has to build it
	// IdleTimeout is how long it may go unused before it stops itself
	// (idle.go); nil takes DefaultIdleTimeout, 0 never stops it.
	IdleTimeout *time.Duration
}

// Computer is a computer as Info and List report it.
type Computer struct {
	Record
	Disk      *DiskUsage      `json:"disk,omitempty"`
	Workspace *WorkspaceUsage `json:"workspace,omitempty"`
	Limits    *Limits         `json:"limits,omitempty"`
	// IdleStopAt is when it stops itself if nothing uses it meanwhile
	// (zero: not running, no idle timeout, or busy).
	IdleStopAt time.Time `json:"idle_stop_at,omitzero"`
	// ActiveSessions counts the exec and shell sessions, file transfers
	// and other holders keeping it busy now.
	ActiveSessions int `json:"active_sessions,omitempty"`
}

// Limits are the resource limits in force for a computer: read back from
// its cgroup while it runs, what it will get when stopped.
type Limits struct {
	CPUs        float64 `json:"cpus"`
	MemoryBytes int64   `json:"memory_bytes"`
	PIDs        int64   `json:"pids"`
}

// DiskUsage is a root disk's size and use.
type DiskUsage struct {
	SizeBytes uint64 `json:"size_bytes"`
	UsedBytes uint64 `json:"used_bytes"`
}

// Bounds of a computer's limits. The upper ones are the host's size
// (hostCPUs, hostMemoryMB): a limit above it limits nothing, and a CPU
// quota far above or below it overflows or rounds to none in the cgroup.
const (
	MinCPUs       = 0.01 // a CFS quota of 1 ms per 100 ms period
	MinMemoryMB   = 64   // room for the agent and a shell
	MinDiskSizeMB = 16   // an ext4 root disk with room for the overlay's upper layer
	MaxEnv        = 1024 // environment variables per computer
)

// hostCPUs is how many CPUs this process may use.
func hostCPUs() float64 { return float64(runtime.NumCPU()) }

// hostMemoryMB is the host's RAM in MB (0 if unknown).
func hostMemoryMB() int64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 0
	}
	return int64(si.Totalram) * int64(si.Unit) >> 20
}

// checkLimits fills in the default limits of opts and refuses any outside
// the bounds above: a computer never runs unlimited, nor with a limit the
// host cannot give.
func checkLimits(opts *CreateOptions) error {
	ncpu := hostCPUs()
	if opts.CPUs == 0 {
		opts.CPUs = min(DefaultCPUs, ncpu)
	}
	memMB := hostMemoryMB()
	if opts.MemoryMB == 0 {
		opts.MemoryMB = DefaultMemoryMB
		if memMB > 0 && int64(opts.MemoryMB) > memMB {
			opts.MemoryMB = int(memMB)
		}
	}
	if err := checkLimitValues(opts.CPUs, opts.MemoryMB); err != nil {
		return err
	}
	if opts.DiskSizeMB < MinDiskSizeMB {
		return invalidf("invalid disk size %d MB: must be at least %d MB", opts.DiskSizeMB, MinDiskSizeMB)
	}
	if len(opts.Env) > MaxEnv {
		return invalidf("too many environment variables (%d): at most %d", len(opts.Env), MaxEnv)
	}
	return nil
}

// checkLimitValues refuses a CPU or memory limit outside the bounds: the
// check of create (checkLimits), and of every start (boundedLimits), as a
// computer recorded before it existed could hold anything.
func checkLimitValues(cpus float64, memoryMB int) error {
	ncpu := hostCPUs()
	if math.IsNaN(cpus) || cpus < MinCPUs || cpus > ncpu {
		return invalidf("invalid cpus %g: must be between %g and %g (the host's CPUs)", cpus, MinCPUs, ncpu)
	}
	memMB := hostMemoryMB()
	if memoryMB < MinMemoryMB || (memMB > 0 && int64(memoryMB) > memMB) {
		return invalidf("invalid memory %d MB: must be between %d MB and %d MB (the host's memory)", memoryMB, MinMemoryMB, memMB)
	}
	return nil
}

// boundedLimits are the CPU and memory limits rec runs with: its own if
// checkLimitValues accepts them, else each brought within the bounds
// (NaN or less than the least: the default; above the host: the host's
// size), with err saying what was refused. No command changes a
// computer's limits, so a computer recorded with limits the host cannot
// give (before they were checked, or on a bigger host) still starts,
// bounded; the record is left as it is.
func boundedLimits(rec Record) (cpus float64, memoryMB int, err error) {
	cpus, memoryMB = rec.CPUs, rec.MemoryMB
	if err = checkLimitValues(cpus, memoryMB); err == nil {
		return cpus, memoryMB, nil
	}
	ncpu := hostCPUs()
	if math.IsNaN(cpus) || cpus < MinCPUs {
		cpus = min(DefaultCPUs, ncpu)
	}
	cpus = min(cpus, ncpu)
	memMB := hostMemoryMB()
	if memoryMB < MinMemoryMB {
		memoryMB = DefaultMemoryMB
	}
	if memMB > 0 && int64(memoryMB) > memMB {
		memoryMB = int(memMB)
	}
	return cpus, memoryMB, err
}

func (m *Manager) validate(ctx context.Context, opts *CreateOptions) error {
	if opts.Template == "" {
		opts.Template = DefaultTemplate
	}
	if opts.Name != "" {
		if err := ValidateName(opts.Name); err != nil {
			return err
		}
	}
	if err := checkLimits(opts); err != nil {
		return err
	}
	if err := checkEgress(opts); err != nil {
		return err
	}
	if opts.IdleTimeout == nil {
		d := DefaultIdleTimeout
		opts.IdleTimeout = &d
	}
	if err := checkIdleTimeout(*opts.IdleTimeout, m.idle.min); err != nil {
		return err
	}
	for k, v := range opts.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return invalidf("invalid environment variable %q", k)
		}
	}
	infos, err := m.tmpl.List(ctx)
	if err != nil {
		return fmt.Errorf("list templates: %w", err)
	}
	var known []string
	for _, t := range infos {
		known = append(known, t.Name)
	}
	if !slices.Contains(known, opts.Template) {
		return invalidf("unknown template %q (known: %s)", opts.Template, strings.Join(known, ", "))
	}
	return nil
}

// workspaceReserve is the host disk space workspaces keep free (`ohm fs
// mount --reserve`'s default): root disks may not count on it.
const workspaceReserve = 1 << 30

// checkDiskRoom refuses a new root disk of sizeMB unless every computer's
// root disk (recs, and the new one) could be filled at once without taking
// the host's filesystem into the workspaces' reserve. Root disks are
// sparse images, so the space they will take is promised, not used, at
// creation; the room is the filesystem's free space plus what the existing
// images already occupy, less the reserve. See SECURITY.md, "Host disk
// policy and API limits".
func (m *Manager) checkDiskRoom(recs []Record, sizeMB int) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Join(m.dataDir, "computers"), &st); err != nil {
		return fmt.Errorf("check free space in %s: %w", m.dataDir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	var promised, used int64
	for _, r := range recs {
		promised += int64(r.DiskSizeMB) << 20
		used += m.rootOccupied(r)
	}
	left := free + used - workspaceReserve - promised
	if int64(sizeMB) <= left>>20 { // in MB: a size near MaxInt would overflow in bytes
		return nil
	}
	return invalidf("disk size %d MB does not fit on the host: %s has %d MB free, the root disks of %d other computers may still take %d MB of it and %d MB stay reserved for workspaces, which leaves %d MB",
		sizeMB, m.dataDir, free>>20, len(recs), max(promised-used, 0)>>20, workspaceReserve>>20, max(left, 0)>>20)
}

// Create makes a new computer and starts it. On failure nothing of it is
// left behind.
func (m *Manager) Create(ctx context.Context, opts CreateOptions) (Computer, error) {
	if err := m.validate(ctx, &opts); err != nil {
		return Computer{}, err
	}
	rec := Record{
		Name:       opts.Name,
		State:      StateCreating,
		Template:   opts.Template,
		DiskSizeMB: opts.DiskSizeMB,
		CPUs:       opts.CPUs,
		MemoryMB:   opts.MemoryMB,
		PIDs:       DefaultPIDs,
		Env:        opts.Env,
		Network:    opts.Network,
		AllowHosts: opts.AllowHosts,
		AllowCIDRs: opts.AllowCIDRs,
		CreatedAt:  time.Now().UTC().Truncate(time.Millisecond),

		IdleTimeoutSeconds: opts.IdleTimeout.Seconds(),
	}
	rec, err := m.reserve(ctx, rec, m.store != "")
	if err != nil {
		return Computer{}, err
	}
	unlock := m.lock(rec.Name)
	defer unlock()
	ctx, tm := withTiming(ctx)
	if err := m.create(ctx, rec, opts.Progress); err != nil {
		// Roll back even if ctx is done: that is often why create failed.
		if rerr := m.destroy(context.WithoutCancel(ctx), rec); rerr != nil {
			m.logf("create %s: roll back: %v", rec.Name, rerr)
		}
		return Computer{}, fmt.Errorf("create %s: %w", rec.Name, err)
	}
	m.logf("create %s: %v", rec.Name, tm)
	rec.State = StateRunning
	return Computer{Record: rec}, nil
}

func (m *Manager) create(ctx context.Context, rec Record, progress io.Writer) error {
	if progress == nil {
		progress = io.Discard
	}
	tm := timingOf(ctx)
	began := time.Now()
	root, err := m.tmpl.Ensure(ctx, rec.Template, progress)
	if err != nil {
		return fmt.Errorf("template %s: %w", rec.Template, err)
	}
	tm.since("template", began)
	spec := m.spec(rec, root)
	if err := os.Mkdir(m.dir(rec.Name), 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(spec.StateDir, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(m.home(rec.Name), 0o755); err != nil {
		return err
	}
	began = time.Now()
	if err := m.ws.Format(ctx, m.volume(rec.Name)); err != nil {
		return fmt.Errorf("format workspace: %w", err)
	}
	tm.since("workspace format", began)
	began = time.Now()
	if spec.DiskMounted {
		if err := m.createRoot(ctx, rec); err != nil {
			return err
		}
	} else if err := m.rt.CreateDisk(ctx, spec); err != nil {
		return fmt.Errorf("create root disk: %w", err)
	}
	tm.since("root disk", began)
	return m.start(ctx, rec, root, true)
}

// start mounts the workspace and starts the sandbox of rec, whose lock the
// caller holds. On the first start (fresh) the workspace gets the
// template's /etc/skel dotfiles.
//
// The steps run one after another: the root disk is an image in the
// workspace's volume (rootdisk.go), so the volume is mounted before the
// root disk is opened, and the sandbox starts on that root disk.
func (m *Manager) start(ctx context.Context, rec Record, root string, fresh bool) error {
	tm := timingOf(ctx)
	if cpus, memMB, err := boundedLimits(rec); err != nil {
		// m.spec gives the sandbox these.
		m.logf("start %s: its recorded limits are refused (%v): it runs with cpus %g and memory %d MB", rec.Name, err, cpus, memMB)
	}
	home := m.home(rec.Name)
	for _, mp := range []string{home, m.legacyHome(rec.Name)} {
		if mountinfo.IsMountpoint(mp) {
			// Left mounted by a crash between start and stop; it may be
			// dead. The root disk on its volume goes first.
			if err := m.closeRoot(ctx, rec.Name); err != nil {
				return fmt.Errorf("close stale root disk: %w", err)
			}
			if err := m.ws.Unmount(ctx, mp); err != nil {
				return fmt.Errorf("unmount stale workspace: %w", err)
			}
		}
	}
	if remoteVolume(rec) {
		if err := m.remakeDir(rec); err != nil {
			return err
		}
	}
	if err := shareHome(m.homeMount(rec.Name)); err != nil {
		return err
	}
	began := time.Now()
	if err := m.ws.Mount(ctx, m.volume(rec.Name), home); err != nil {
		unshareHome(m.homeMount(rec.Name))
		return fmt.Errorf("mount workspace: %w", err)
	}
	tm.since("workspace mount", began)
	unmount := func() {
		m.closeRoot(context.WithoutCancel(ctx), rec.Name)
		m.ws.Unmount(context.WithoutCancel(ctx), home)
		unshareHome(m.homeMount(rec.Name))
	}
	if err := ownHome(home); err != nil {
		unmount()
		return err
	}
	if fresh {
		if err := copySkel(filepath.Join(root, "etc", "skel"), home); err != nil {
			unmount()
			return fmt.Errorf("workspace: copy /etc/skel: %w", err)
		}
	}
	spec := m.spec(rec, root)
	if spec.DiskMounted {
		// The volume is mounted now (the workspace's Mount).
		began = time.Now()
		if err := m.openRoot(ctx, rec); err != nil {
			unmount()
			return err
		}
		tm.since("root disk open", began)
	}
	began = time.Now()
	inst, err := m.rt.Start(ctx, spec)
	if err != nil {
		m.rt.Cleanup(context.WithoutCancel(ctx), spec)
		unmount()
		return fmt.Errorf("start: %w", err)
	}
	tm.since("sandbox start", began)
	m.setLive(rec.Name, &live{inst: inst, shell: m.shellOf(ctx, rec.Template, root)})
	if err := m.reg.setState(ctx, rec.Name, StateRunning); err != nil {
		m.stop(context.WithoutCancel(ctx), rec, "start failed: "+err.Error())
		return err
	}
	m.idleStarted(rec.Name, rec.IdleTimeout())
	return nil
}

// ownHome gives the workspace root to the user ohm (once: the first start
// finds it owned by root).
func ownHome(home string) error {
	var st syscall.Stat_t
	if err := syscall.Stat(home, &st); err != nil {
		return fmt.Errorf("workspace: %w", err)
	}
	if st.Uid == homeUID && st.Gid == homeUID {
		return nil
	}
	if err := os.Chown(home, homeUID, homeUID); err != nil {
		return fmt.Errorf("workspace: %w", err)
	}
	return nil
}

// hasBash reports whether a template root has bash, which run prefers.
func hasBash(root string) bool {
	for _, p := range []string{"bin/bash", "usr/bin/bash"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			return true
		}
	}
	return false
}

// stop stops the sandbox of rec, whose lock the caller holds, and unmounts
// its workspace, which flushes it; reason is recorded as why it stopped.
func (m *Manager) stop(ctx context.Context, rec Record, reason string) error {
	var errs []error
	began := time.Now()
	if l := m.live(rec.Name); l != nil {
		if err := l.inst.Stop(ctx, stopGrace); err != nil {
			errs = append(errs, fmt.Errorf("stop sandbox: %w", err))
			if err := m.rt.Cleanup(ctx, m.spec(rec, m.builtRoot(ctx, rec.Template))); err != nil {
				errs = append(errs, fmt.Errorf("clean up sandbox: %w", err))
			}
		}
		m.setLive(rec.Name, nil)
	}
	timingOf(ctx).since("sandbox stop", began)
	m.endFeeds(rec.Name, reason)
	errs = append(errs, m.unmountHome(ctx, rec.Name)...)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return m.reg.setStopped(ctx, rec.Name, reason)
}

// destroy removes every trace of rec, whose lock the caller holds: sandbox,
// workspace, state directory and row. It keeps going past errors so that as
// much as possible is gone, and reports them all.
func (m *Manager) destroy(ctx context.Context, rec Record) error {
	var errs []error
	if l := m.live(rec.Name); l != nil {
		if err := l.inst.Stop(ctx, stopGrace); err != nil {
			errs = append(errs, fmt.Errorf("stop sandbox: %w", err))
		}
		m.setLive(rec.Name, nil)
	}
	m.endFeeds(rec.Name, "deleted")
	spec := m.spec(rec, m.builtRoot(ctx, rec.Template))
	if _, err := os.Stat(spec.StateDir); err == nil {
		if err := m.rt.Cleanup(ctx, spec); err != nil {
			errs = append(errs, fmt.Errorf("clean up sandbox: %w", err))
		}
	}
	errs = append(errs, m.unmountHome(ctx, rec.Name)...)
	if err := m.ws.Destroy(ctx, m.volume(rec.Name)); err != nil {
		errs = append(errs, fmt.Errorf("destroy workspace: %w", err))
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(m.dir(rec.Name)); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		// Keep the row (stopped) so that delete can be retried.
		m.reg.setStopped(ctx, rec.Name, "delete failed partway")
		return errors.Join(errs...)
	}
	return m.reg.remove(ctx, rec.Name)
}

// Start starts a stopped computer.
func (m *Manager) Start(ctx context.Context, name string) error {
	unlock := m.lock(name)
	defer unlock()
	rec, err := m.reg.get(ctx, name)
	if err != nil {
		return err
	}
	if rec, err = m.reapIfDead(ctx, rec); err != nil {
		return err
	}
	if rec.State != StateStopped {
		return statef("computer %q is already %s", name, rec.State)
	}
	ctx, tm := withTiming(ctx)
	if err := m.startRec(ctx, rec); err != nil {
		return err
	}
	m.logf("start %s: %v", name, tm)
	return nil
}

func (m *Manager) startRec(ctx context.Context, rec Record) error {
	root, err := m.tmpl.Ensure(ctx, rec.Template, io.Discard)
	if err != nil {
		return fmt.Errorf("start %s: template %s: %w", rec.Name, rec.Template, err)
	}
	if err := m.start(ctx, rec, root, false); err != nil {
		return fmt.Errorf("start %s: %w", rec.Name, err)
	}
	return nil
}

// Stop stops a running computer: its processes get SIGTERM, then SIGKILL
// after a grace period, and its workspace is flushed and unmounted.
func (m *Manager) Stop(ctx context.Context, name string) error {
	unlock := m.lock(name)
	defer unlock()
	rec, err := m.reg.get(ctx, name)
	if err != nil {
		return err
	}
	if rec.State != StateRunning {
		if rec.State == StateStopped && rec.StopReason != "" {
			return statef("computer %q is not running (it is stopped: %s)", name, rec.StopReason)
		}
		return statef("computer %q is not running (it is %s)", name, rec.State)
	}
	if l := m.live(name); l != nil && ended(l) {
		// Its init died; the watcher had not got to it yet.
		m.reapDead(ctx, name, l)
		return nil
	}
	ctx, tm := withTiming(ctx)
	if err := m.stop(ctx, rec, ReasonStopped); err != nil {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	m.logf("stop %s: %v", name, tm)
	return nil
}

// Delete removes a computer, stopping it first if it runs.
func (m *Manager) Delete(ctx context.Context, name string) error {
	unlock := m.lock(name)
	defer unlock()
	rec, err := m.reg.get(ctx, name)
	if err != nil {
		return err
	}
	if err := m.destroy(context.WithoutCancel(ctx), rec); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// Get returns a computer's record.
func (m *Manager) Get(ctx context.Context, name string) (Record, error) {
	return m.reg.get(ctx, name)
}

// Info returns a computer with its root disk and workspace use.
func (m *Manager) Info(ctx context.Context, name string) (Computer, error) {
	rec, err := m.reg.get(ctx, name)
	if err != nil {
		return Computer{}, err
	}
	rec = m.truth(rec)
	c := Computer{Record: rec}
	if rec.State == StateCreating {
		return c, nil
	}
	if du, err := m.rt.Usage(ctx, m.spec(rec, m.builtRoot(ctx, rec.Template))); err == nil {
		c.Disk = &DiskUsage{SizeBytes: du.Size, UsedBytes: du.Used}
	} else {
		m.logf("info %s: root disk usage: %v", name, err)
	}
	if wu, err := m.ws.Usage(ctx, m.volume(name)); err == nil {
		c.Workspace = &wu
	} else {
		m.logf("info %s: workspace usage: %v", name, err)
	}
	spec := m.spec(rec, "")
	lim := spec.Limits()
	if rec.State == StateRunning {
		if cur, err := m.rt.Limits(ctx, spec); err == nil {
			lim = cur
		} else {
			m.logf("info %s: limits in force: %v", name, err)
		}
	}
	c.Limits = &Limits{CPUs: lim.CPUs, MemoryBytes: lim.MemoryBytes, PIDs: lim.PIDs}
	if rec.State == StateRunning {
		st := m.idleStatus(name)
		c.IdleStopAt, c.ActiveSessions = st.StopAt, st.Sessions
	}
	return c, nil
}

// WorkspaceUsage reports what computer name's workspace holds.
func (m *Manager) WorkspaceUsage(ctx context.Context, name string) (WorkspaceUsage, error) {
	if err := ValidateName(name); err != nil {
		return WorkspaceUsage{}, err
	}
	return m.ws.Usage(ctx, m.volume(name))
}

// List returns every computer, oldest first.
func (m *Manager) List(ctx context.Context) ([]Record, error) {
	recs, err := m.reg.list(ctx)
	for i := range recs {
		recs[i] = m.truth(recs[i])
	}
	return recs, err
}

// truth is rec as it is: one recorded running whose init has ended shows
// as stopped, with the reason, even before the watcher has recorded it.
func (m *Manager) truth(rec Record) Record {
	if rec.State != StateRunning {
		return rec
	}
	if l := m.live(rec.Name); l != nil && ended(l) {
		rec.State = StateStopped
		rec.StopReason = l.inst.EndReason()
		rec.StoppedAt = time.Now().UTC() // about: the watcher records the time it stopped it
	}
	return rec
}

// ExecOptions describe a command to run in a computer.
type ExecOptions struct {
	Command string   // run through `bash -lc` (or `sh -c` without bash); with stdin, empty means a login shell
	Argv    []string // run as is, instead of Command
	User    string   // "ohm" (default) or "root"
	Workdir string
	Env     map[string]string
	TTY     bool
	Timeout time.Duration
	// Size is the initial window size with TTY; Resize carries later ones.
	Size   sandbox.WindowSize
	Resize <-chan sandbox.WindowSize
}

// Exec runs a command in computer name, starting the computer first if it
// is stopped, and returns the command's exit code.
func (m *Manager) Exec(ctx context.Context, name string, opts ExecOptions, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	req, err := execRequest(opts, stdin != nil)
	if err != nil {
		return 0, err
	}
	l, release, err := m.ensureRunning(ctx, name)
	if err != nil {
		return 0, err
	}
	defer release() // busy while it runs, quiet or not: no idle stop under it
	if req.Argv == nil {
		sh := l.shell
		if sh == "" {
			sh = "/bin/sh"
		}
		switch {
		case opts.Command == "":
			req.Argv = []string{sh, "-l"} // an interactive login shell
		case path.Base(sh) == "bash":
			req.Argv = []string{sh, "-lc", opts.Command}
		default:
			req.Argv = []string{sh, "-c", opts.Command}
		}
	}
	code, err := l.inst.Exec(ctx, req, stdin, stdout, stderr)
	if err != nil {
		return code, fmt.Errorf("run in %s: %w", name, err)
	}
	return code, nil
}

// execRequest checks opts; an empty command is a login shell, which only
// makes sense with stdin.
func execRequest(opts ExecOptions, interactive bool) (sandbox.ExecRequest, error) {
	req := sandbox.ExecRequest{
		User: opts.User, Workdir: opts.Workdir, TTY: opts.TTY, Timeout: opts.Timeout,
		Size: opts.Size, Resize: opts.Resize,
	}
	switch opts.User {
	case "", "ohm", "root":
	default:
		return req, invalidf("invalid user %q: use ohm or root", opts.User)
	}
	if opts.Timeout < 0 {
		return req, invalidf("invalid timeout %v", opts.Timeout)
	}
	if len(opts.Argv) > 0 {
		req.Argv = opts.Argv
	} else if opts.Command == "" && !interactive {
		return req, invalidf("no command to run")
	}
	for k, v := range opts.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return req, invalidf("invalid environment variable %q", k)
		}
		req.Env = append(req.Env, k+"="+v)
	}
	sort.Strings(req.Env)
	return req, nil
}

// reapIfDead stops rec, whose lock the caller holds, if it is recorded
// running but its init has ended and the watcher has not handled it yet,
// and returns its record as it is now.
func (m *Manager) reapIfDead(ctx context.Context, rec Record) (Record, error) {
	if rec.State != StateRunning {
		return rec, nil
	}
	l := m.live(rec.Name)
	if l == nil || !ended(l) {
		return rec, nil
	}
	m.reapDead(ctx, rec.Name, l)
	return m.reg.get(ctx, rec.Name)
}

// ensureRunning returns the live sandbox of name, starting it if stopped,
// held busy (see Busy) until release is called.
func (m *Manager) ensureRunning(ctx context.Context, name string) (l *live, release func(), err error) {
	unlock := m.lock(name)
	defer unlock()
	rec, err := m.reg.get(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	if rec, err = m.reapIfDead(ctx, rec); err != nil {
		return nil, nil, err
	}
	switch rec.State {
	case StateCreating:
		return nil, nil, statef("computer %q is still being created", name)
	case StateStopped:
		if err := m.startRec(ctx, rec); err != nil {
			return nil, nil, err
		}
	}
	l = m.live(name)
	if l == nil {
		return nil, nil, fmt.Errorf("computer %q is recorded running but has no sandbox", name)
	}
	// Under the lock: an idle stop, which takes it too, sees the hold.
	return l, m.hold(name), nil
}

// reconcile brings the registry in line with reality at start-up.
func (m *Manager) reconcile(ctx context.Context) error {
	recs, err := m.reg.list(ctx)
	if err != nil {
		return err
	}
	for _, rec := range recs {
		switch rec.State {
		case StateCreating:
			// A daemon died mid-create: finish the roll back.
			m.logf("reconcile %s: removing half-created computer", rec.Name)
			if err := m.destroy(ctx, rec); err != nil {
				m.logf("reconcile %s: %v", rec.Name, err)
			}
		case StateRunning:
			root := m.builtRoot(ctx, rec.Template)
			spec := m.spec(rec, root)
			inst, err := m.rt.Attach(ctx, spec)
			if err == nil {
				m.setLive(rec.Name, &live{inst: inst, shell: m.shellOf(ctx, rec.Template, root)})
				m.idleStarted(rec.Name, rec.IdleTimeout())
				continue
			}
			m.logf("reconcile %s: not running (%v); marking it stopped", rec.Name, err)
			if err := m.rt.Cleanup(ctx, spec); err != nil {
				m.logf("reconcile %s: clean up sandbox: %v", rec.Name, err)
			}
			for _, err := range m.unmountHome(ctx, rec.Name) {
				m.logf("reconcile %s: %v", rec.Name, err)
			}
			if err := m.reg.setStopped(ctx, rec.Name, ReasonNotRunningAtStart); err != nil {
				return err
			}
		case StateStopped:
			for _, err := range m.unmountHome(ctx, rec.Name) {
				m.logf("reconcile %s: %v", rec.Name, err)
			}
		}
	}
	return nil
}

// reserve records rec, in state creating, under its name (a free one
// picked when it has none): the row holds the name and the disk space,
// so two creates (or forks) at once cannot both count the same free
// space. With inStore, rec gets a new volume in m's store (store.go).
func (m *Manager) reserve(ctx context.Context, rec Record, inStore bool) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	recs, err := m.reg.list(ctx)
	if err != nil {
		return Record{}, err
	}
	if err := m.checkDiskRoom(recs, rec.DiskSizeMB); err != nil {
		return Record{}, err
	}
	if rec.Name == "" {
		taken := map[string]bool{}
		for _, r := range recs {
			taken[r.Name] = true
		}
		rec.Name = pickName(taken)
	}
	if inStore {
		if rec.Volume, err = m.storeVolume(rec.Name); err != nil {
			return Record{}, err
		}
	}
	if err := m.reg.insert(ctx, rec); err != nil {
		return Record{}, err
	}
	return rec, nil
}
