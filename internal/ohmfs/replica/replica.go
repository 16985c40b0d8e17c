// Package replica replicates an ohmfs volume's SQLite metadata continuously
// with Litestream (embedded), and restores it on a host that has lost it.
//
// The metadata engine keeps one write transaction open at all times and
// commits it about once a second (group commit). Litestream must take the
// database's write lock for a moment to checkpoint the WAL, so every local
// Litestream sync runs inside meta.DB.Quiesce, between two of the engine's
// transactions. Litestream owns checkpointing: the engine runs none but
// SQLite's passive auto-checkpoint, which cannot pass Litestream's read lock.
//
// Each round (default every second) ships the WAL frames committed since the
// last round to the replica target: a directory (<volume>/meta-replica) for
// local volumes, the volume's S3 prefix (meta-replica/) for S3 volumes.
// After every round the replicator writes a small status file beside the
// database, so that `ohm fs status` in another process can report the
// position and the lag.
package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/benbjohnson/litestream"
	lsfile "github.com/benbjohnson/litestream/file"

	"ohm/internal/ohmfs/meta"
	"ohm/internal/ohmfs/objstore"
)

// Dir is the key prefix (or directory name) of a volume's replica.
const Dir = "meta-replica"

// DefaultInterval is how often changes are shipped: the bound on the
// replica's lag while the target answers.
const DefaultInterval = time.Second

// Target is where a replica lives.
type Target struct {
	client litestream.ReplicaClient
	name   string
}

// String names the target for messages.
func (t Target) String() string { return t.name }

// FileTarget is a replica in the local directory dir.
func FileTarget(dir string) Target {
	return Target{client: lsfile.NewReplicaClient(dir), name: dir}
}

// S3Target is a replica under the S3 store's prefix, at Dir. It goes
// through the store's own client (see storeClient), in the same layout as
// Litestream's S3 client.
func S3Target(s *objstore.S3Store) Target {
	return Target{client: newStoreClient(s, Dir), name: fmt.Sprintf("s3://%s/%s%s", s.Bucket(), s.Prefix(), Dir)}
}

// ErrFenced is returned when the volume's lease is lost and shipping stopped.
var ErrFenced = errors.New("lease lost: not replicating")

// ErrNoReplica is returned by Restore when the target holds no replica.
var ErrNoReplica = errors.New("no metadata replica")

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Restore rebuilds the database at dbPath from t. It refuses to overwrite
// an existing database; stale -wal/-shm files and Litestream's local state
// left beside a lost database are removed first.
func Restore(ctx context.Context, dbPath string, t Target) error {
	if _, err := os.Stat(dbPath); err == nil {
		return fmt.Errorf("restore metadata to %s: %w", dbPath, fs.ErrExist)
	}
	for _, p := range []string{dbPath + "-wal", dbPath + "-shm", litestream.TXIDPath(dbPath), stateDir(dbPath), statusPath(dbPath)} {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("restore metadata to %s: %w", dbPath, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(dbPath), 0o755); err != nil {
		return fmt.Errorf("restore metadata to %s: %w", dbPath, err)
	}
	// The DB is never opened: it only gives the restore a quiet logger
	// (without one, Litestream logs to slog's default, into the CLI's output).
	ldb := litestream.NewDB(dbPath)
	ldb.Logger = quietLogger()
	r := litestream.NewReplicaWithClient(ldb, t.client)
	opt := litestream.NewRestoreOptions()
	opt.OutputPath = dbPath
	opt.IntegrityCheck = litestream.IntegrityCheckQuick
	if err := r.Restore(ctx, opt); err != nil {
		os.Remove(dbPath)
		if errors.Is(err, litestream.ErrTxNotAvailable) || errors.Is(err, litestream.ErrNoSnapshots) {
			return fmt.Errorf("restore metadata from %s: %w", t, ErrNoReplica)
		}
		return fmt.Errorf("restore metadata from %s: %w", t, err)
	}
	os.Remove(litestream.TXIDPath(dbPath))
	return nil
}

// stateDir is Litestream's local working directory for the database.
func stateDir(dbPath string) string {
	dir, file := filepath.Split(dbPath)
	return filepath.Join(dir, "."+file+litestream.MetaDirSuffix)
}

// Options tune Start.
type Options struct {
	Interval time.Duration // default DefaultInterval
	Logger   *slog.Logger  // Litestream's log; default: discarded
	// Fenced, if set, is asked before each round: once it says true (the
	// volume's lease is lost) nothing more is shipped, so that the old
	// holder never overwrites the new holder's replica.
	Fenced func() bool
}

// Replicator ships a database's changes to its target until Close.
type Replicator struct {
	m      *meta.DB
	ls     *litestream.DB
	target Target
	path   string

	stop   chan struct{}
	done   chan struct{}
	fenced func() bool

	mu     sync.Mutex // serializes rounds
	smu    sync.Mutex // guards st
	st     Status
	closed bool
}

// Start begins replicating m to t. The first round runs before Start
// returns, so that a target that cannot be written fails here.
func Start(ctx context.Context, m *meta.DB, t Target, opts Options) (*Replicator, error) {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	ls := litestream.NewDB(m.Path())
	ls.Logger = opts.Logger
	// No monitor goroutine: rounds are driven from here, inside Quiesce.
	ls.MonitorInterval = 0
	ls.BusyTimeout = 5 * time.Second
	ls.ShutdownSyncTimeout = 30 * time.Second
	rep := litestream.NewReplicaWithClient(ls, t.client)
	rep.MonitorEnabled = false
	ls.Replica = rep
	if err := ls.Open(); err != nil {
		return nil, fmt.Errorf("start metadata replica to %s: %w", t, err)
	}
	r := &Replicator{
		m: m, ls: ls, target: t, path: m.Path(),
		stop: make(chan struct{}), done: make(chan struct{}),
		st: Status{Target: t.name}, fenced: opts.Fenced,
	}
	if err := r.Flush(ctx); err != nil {
		ls.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("start metadata replica: %w", err)
	}
	go r.loop(opts.Interval)
	return r, nil
}

func (r *Replicator) loop(interval time.Duration) {
	defer close(r.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	backoff := time.Duration(0)
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		if backoff > 0 {
			select {
			case <-r.stop:
				return
			case <-time.After(backoff):
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		err := r.round(ctx)
		cancel()
		if err != nil {
			backoff = min(max(2*backoff, interval), 30*time.Second)
		} else {
			backoff = 0
		}
	}
}

// Flush ships every change committed to the database before it was
// called, and returns when the target has them (what --fsync=replica waits
// for).
func (r *Replicator) Flush(ctx context.Context) error {
	return r.round(ctx)
}

// round is one local sync (inside Quiesce) and one upload.
func (r *Replicator) round(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fenced != nil && r.fenced() {
		return ErrFenced
	}
	// The WAL cannot change between the end of the local sync and the end
	// of Quiesce: a WAL newer than synced has changes this round missed.
	var synced time.Time
	err := r.m.Quiesce(ctx, func() error {
		err := r.ls.Sync(ctx)
		synced = time.Now()
		return err
	})
	if err == nil {
		err = r.ls.Replica.Sync(ctx)
	}
	var local, remote uint64
	if pos, perr := r.ls.Pos(); perr == nil {
		local = uint64(pos.TXID)
	}
	remote = uint64(r.ls.Replica.Pos().TXID)

	r.smu.Lock()
	r.st.Position = remote
	r.st.LocalPosition = local
	r.st.UpdatedAt = time.Now().UTC()
	if err != nil {
		r.st.LastError = oneLine(err)
		r.st.LastErrorAt = r.st.UpdatedAt
	} else {
		r.st.LastError = ""
		if remote >= local {
			r.st.SyncedAt = synced.UTC()
		}
	}
	st := r.st
	r.smu.Unlock()
	writeStatus(r.path, st)
	if err != nil {
		return fmt.Errorf("replicate metadata to %s: %w", r.target, err)
	}
	return nil
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

// Status reports the replica's state now.
func (r *Replicator) Status() Status {
	r.smu.Lock()
	st := r.st
	r.smu.Unlock()
	st.fillLag(r.path, time.Now())
	return st
}

// Close ships what is left and stops replicating. Call it after the
// metadata database is closed, so that the last commit is in the WAL and
// nothing holds the write lock.
func (r *Replicator) Close(ctx context.Context) error {
	r.smu.Lock()
	if r.closed {
		r.smu.Unlock()
		return nil
	}
	r.closed = true
	r.smu.Unlock()
	close(r.stop)
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fenced != nil && r.fenced() {
		return fmt.Errorf("close metadata replica to %s: %w", r.target, ErrFenced)
	}
	err := r.ls.Close(ctx)
	var local, remote uint64
	remote = uint64(r.ls.Replica.Pos().TXID)
	r.smu.Lock()
	r.st.Position = remote
	if local == 0 {
		local = remote
	}
	r.st.LocalPosition = local
	r.st.UpdatedAt = time.Now().UTC()
	if err != nil {
		r.st.LastError = oneLine(err)
		r.st.LastErrorAt = r.st.UpdatedAt
	} else {
		r.st.LastError = ""
		r.st.SyncedAt = r.st.UpdatedAt
	}
	st := r.st
	r.smu.Unlock()
	writeStatus(r.path, st)
	if err != nil {
		return fmt.Errorf("close metadata replica to %s: %w", r.target, err)
	}
	return nil
}

// Status is the state of a volume's metadata replica, as `ohm fs status`
// shows it.
type Status struct {
	Target        string    `json:"target"`
	Position      uint64    `json:"position"`       // last transaction id the replica has
	LocalPosition uint64    `json:"local_position"` // last transaction id read from the local WAL
	LagSeconds    float64   `json:"lag_seconds"`    // age of the oldest commit the replica lacks; 0 when caught up
	SyncedAt      time.Time `json:"synced_at,omitzero"`
	UpdatedAt     time.Time `json:"updated_at,omitzero"`
	LastError     string    `json:"last_error,omitempty"`
	LastErrorAt   time.Time `json:"last_error_at,omitzero"`
}

// fillLag computes LagSeconds: zero if the database's WAL has not changed
// since the start of the last round that left the replica caught up,
// otherwise the time since that round.
func (st *Status) fillLag(dbPath string, now time.Time) {
	st.LagSeconds = 0
	if st.SyncedAt.IsZero() {
		if !st.UpdatedAt.IsZero() {
			st.LagSeconds = now.Sub(st.UpdatedAt).Seconds()
		}
		return
	}
	fi, err := os.Stat(dbPath + "-wal")
	if err != nil || !fi.ModTime().After(st.SyncedAt) {
		return
	}
	st.LagSeconds = now.Sub(st.SyncedAt).Seconds()
}

func statusPath(dbPath string) string { return dbPath + "-replica.json" }

func writeStatus(dbPath string, st Status) {
	b, err := json.Marshal(st)
	if err != nil {
		return
	}
	tmp := statusPath(dbPath) + ".tmp"
	if os.WriteFile(tmp, b, 0o644) == nil {
		os.Rename(tmp, statusPath(dbPath))
	}
}

// ReadStatus returns the replica status the last replicator of the
// database at dbPath recorded, with the lag as of now. ok is false when no
// replicator has run there.
func ReadStatus(dbPath string) (st Status, ok bool) {
	b, err := os.ReadFile(statusPath(dbPath))
	if err != nil || json.Unmarshal(b, &st) != nil {
		return Status{}, false
	}
	st.fillLag(dbPath, time.Now())
	return st, true
}

// RemotePosition returns the last transaction id the target holds (0 for
// an empty target).
func RemotePosition(ctx context.Context, t Target) (uint64, error) {
	var pos uint64
	for level := 0; level <= litestream.SnapshotLevel; level++ {
		itr, err := t.client.LTXFiles(ctx, level, 0, false)
		if err != nil {
			return 0, fmt.Errorf("read replica position from %s: %w", t, err)
		}
		for itr.Next() {
			if m := uint64(itr.Item().MaxTXID); m > pos {
				pos = m
			}
		}
		err = itr.Close()
		if err != nil {
			return 0, fmt.Errorf("read replica position from %s: %w", t, err)
		}
	}
	return pos, nil
}

// Stale reports whether the local database at dbPath is older than the
// target: another host has shipped transactions this one never saw, so the
// local copy must be replaced by a restore. A database this host never
// replicated from counts as stale when the target has anything.
func Stale(ctx context.Context, dbPath string, t Target) (bool, error) {
	remote, err := RemotePosition(ctx, t)
	if err != nil {
		return false, err
	}
	st, ok := ReadStatus(dbPath)
	if !ok {
		return remote > 0, nil
	}
	return remote > st.Position, nil
}

// Discard removes a local database and everything Litestream kept beside it.
func Discard(dbPath string) error {
	for _, p := range []string{dbPath, dbPath + "-wal", dbPath + "-shm", litestream.TXIDPath(dbPath), stateDir(dbPath), statusPath(dbPath)} {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	return nil
}
