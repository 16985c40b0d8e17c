package meta

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// blockReserve is how many block ids one committed reservation covers.
const blockReserve = 4096

// DB is an open metadata database. Its methods are safe for concurrent use;
// they are serialized internally.
//
// Every method takes a context, as callers across the module expect, but
// most of them do not watch it: a call is a few in-process SQLite
// statements on memory-resident pages (microseconds, never a network
// round trip), and interrupting a write halfway would roll back the whole
// uncommitted tail of the group commit (docs/contracts.md), losing other
// callers' operations. Only calls that walk the whole database (Check)
// stop early when ctx is done. The parameter stays so that a backend that
// can block (a remote database) fits the same signatures.
type DB struct {
	mu       sync.Mutex
	c        *conn
	path     string
	readOnly bool
	broken   error // set when the write transaction was lost; every call fails with it

	// Counters are kept in memory by the writer and written to the
	// counters table just before each COMMIT, so that the committed table
	// always matches the committed rows without a write per operation.
	ctr       counters
	committed counters

	blockNext uint64 // next block id to hand out
	blockEnd  uint64 // end of the committed reservation
}

type counters struct {
	nextIno       uint64
	nextCookie    uint64
	usedBytes     uint64
	inodes        uint64
	io            IOStats
	walCheckpoint uint64
}

// Create makes a new, empty metadata database at path with a root directory
// owned by uid/gid with mode 0755 and the given settings (volume uuid,
// capacity, chunk size, ...). It fails if path exists.
func Create(ctx context.Context, path string, uid, gid uint32, settings map[string]string) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("create metadata %s: %w", path, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("create metadata %s: %w", path, err)
	}
	c, err := openConn(path, false)
	if err != nil {
		return fmt.Errorf("create metadata %s: %w", path, err)
	}
	err = func() error {
		if err := setPragmas(c, false); err != nil {
			return err
		}
		if err := migrate(c); err != nil {
			return err
		}
		if err := c.execScript("BEGIN IMMEDIATE"); err != nil {
			return err
		}
		now := time.Now().UnixNano()
		if _, err := c.exec(`INSERT INTO inodes (ino, mode, nlink, uid, gid, atime_ns, mtime_ns, ctime_ns, parent)
			VALUES (?, ?, 2, ?, ?, ?, ?, ?, ?)`,
			RootIno, uint32(syscall.S_IFDIR|0o755), uid, gid, now, now, now, RootIno); err != nil {
			return err
		}
		for name, v := range map[string]uint64{
			ctrNextIno:       uint64(RootIno) + 1,
			ctrNextCookie:    3,
			ctrBlockReserved: 1,
			ctrUsedBytes:     0,
			ctrInodes:        1,
		} {
			if _, err := c.exec("INSERT INTO counters (name, value) VALUES (?, ?)", name, v); err != nil {
				return err
			}
		}
		for k, v := range settings {
			if _, err := c.exec("INSERT INTO settings (key, value) VALUES (?, ?)", k, v); err != nil {
				return err
			}
		}
		return c.execScript("COMMIT")
	}()
	if cerr := c.close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		os.Remove(path + "-wal")
		os.Remove(path + "-shm")
		return fmt.Errorf("create metadata %s: %w", path, err)
	}
	return nil
}

func setPragmas(c *conn, readOnly bool) error {
	pragmas := []string{
		"PRAGMA busy_timeout = 5000",
	}
	if readOnly {
		pragmas = append(pragmas, "PRAGMA query_only = 1")
	} else {
		pragmas = append(pragmas,
			"PRAGMA journal_mode = WAL",
			// NORMAL: COMMIT appends to the WAL without an fsync, and
			// Commit fsyncs the WAL itself after letting go of db.mu, so
			// that no call waits for the disk while a commit becomes
			// durable. Checkpoints still fsync the WAL before copying it
			// into the database file and the file after.
			"PRAGMA synchronous = NORMAL",
			// A whole group commit's dirty pages should fit in memory.
			"PRAGMA cache_size = -65536",
			"PRAGMA temp_store = MEMORY",
		)
	}
	for _, p := range pragmas {
		if err := c.execScript(p); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

func schemaVersion(c *conn) (int, error) {
	var v int64
	if _, err := c.queryRow("PRAGMA user_version", nil, &v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return int(v), nil
}

// migrate brings the schema to the latest version, each step in its own
// transaction.
func migrate(c *conn) error {
	v, err := schemaVersion(c)
	if err != nil {
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this program knows (%d)", v, len(migrations))
	}
	for ; v < len(migrations); v++ {
		script := fmt.Sprintf("BEGIN IMMEDIATE;\n%s\nPRAGMA user_version = %d;\nCOMMIT;", migrations[v], v+1)
		if err := c.execScript(script); err != nil {
			c.execScript("ROLLBACK")
			return fmt.Errorf("migrate schema to version %d: %w", v+1, err)
		}
	}
	return nil
}

// Open opens the database at path, migrating its schema if it is older, and
// begins the write transaction (unless opts.ReadOnly).
func Open(ctx context.Context, path string, opts Options) (*DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open metadata: %w", err)
	}
	c, err := openConn(path, opts.ReadOnly)
	if err != nil {
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	db := &DB{c: c, path: path, readOnly: opts.ReadOnly}
	if err := db.open(); err != nil {
		c.close()
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	return db, nil
}

func (db *DB) open() error {
	c := db.c
	if err := setPragmas(c, db.readOnly); err != nil {
		return err
	}
	if db.readOnly {
		v, err := schemaVersion(c)
		if err != nil {
			return err
		}
		if v != len(migrations) {
			return fmt.Errorf("schema version %d, want %d (open it read-write once to migrate)", v, len(migrations))
		}
		return nil
	}
	if err := migrate(c); err != nil {
		return err
	}
	if err := c.execScript("BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	ctr, reserved, err := loadCounters(c)
	if err != nil {
		return err
	}
	db.ctr, db.committed = ctr, ctr
	// Ids below the committed reservation end may have been handed out
	// before a crash; start past it.
	db.blockNext, db.blockEnd = reserved, reserved
	return nil
}

func loadCounters(c *conn) (ctr counters, blockReserved uint64, err error) {
	seen := 0
	err = c.each("SELECT name, value FROM counters", nil, func(r *rows) error {
		name := r.text(0)
		v := uint64(r.int(1))
		switch name {
		case ctrNextIno:
			ctr.nextIno = v
		case ctrNextCookie:
			ctr.nextCookie = v
		case ctrBlockReserved:
			blockReserved = v
		case ctrUsedBytes:
			ctr.usedBytes = v
		case ctrInodes:
			ctr.inodes = v
		case ctrIOWritten:
			ctr.io.Written = v
		case ctrIOWAL:
			ctr.io.WAL = v
		case ctrIOUploaded:
			ctr.io.Uploaded = v
		case ctrIOUploadedRaw:
			ctr.io.UploadedRaw = v
		case ctrWALCheckpoint:
			ctr.walCheckpoint = v
		default:
			return nil
		}
		seen++
		return nil
	})
	if err != nil {
		return ctr, 0, fmt.Errorf("load counters: %w", err)
	}
	if seen != 10 {
		return ctr, 0, fmt.Errorf("load counters: %d of 10 counters present", seen)
	}
	return ctr, blockReserved, nil
}

// Close commits and closes the database.
func (db *DB) Close(ctx context.Context) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.c == nil {
		return nil
	}
	var err error
	if !db.readOnly && db.broken == nil {
		err = db.commitTxLocked()
		if err == nil {
			// Another connection (the replica's) may keep the WAL from
			// being checkpointed at close: make the last commit durable.
			err = fsyncWAL(db.path)
		}
		if err != nil {
			err = fmt.Errorf("close metadata %s: commit: %w", db.path, err)
		}
	}
	if cerr := db.c.close(); cerr != nil && err == nil {
		err = fmt.Errorf("close metadata %s: %w", db.path, cerr)
	}
	db.c = nil
	if db.broken == nil {
		db.broken = errors.New("meta: database is closed")
	}
	return err
}

// Commit makes every call made so far durable (the WAL is fsynced), then
// begins the next transaction. It is the only point where the database is
// written to disk. The fsync runs without the lock: calls made meanwhile go
// on into the next transaction.
func (db *DB) Commit(ctx context.Context) error {
	db.mu.Lock()
	if err := db.usable(); err != nil {
		db.mu.Unlock()
		return err
	}
	if db.readOnly {
		db.mu.Unlock()
		return nil
	}
	err := db.commitNoSyncLocked()
	db.mu.Unlock()
	if err != nil {
		return err
	}
	return db.syncWAL()
}

// commitLocked commits and makes the commit durable before returning,
// holding the lock throughout.
func (db *DB) commitLocked() error {
	if err := db.commitNoSyncLocked(); err != nil {
		return err
	}
	return db.syncWALLocked()
}

// commitNoSyncLocked commits the write transaction into the WAL (not yet
// fsynced) and begins the next one. WAL frames are appended in order and
// chained by checksums, so a crash keeps a prefix of the commits.
func (db *DB) commitNoSyncLocked() error {
	if err := db.commitTxLocked(); err != nil {
		return err
	}
	return db.beginTxLocked()
}

// commitTxLocked writes the in-memory counters and commits the write
// transaction, leaving none open. A failure loses the uncommitted tail, so
// it breaks the DB: every later call fails with it.
func (db *DB) commitTxLocked() error {
	err := db.flushCounters()
	if err == nil {
		err = db.c.execScript("COMMIT")
	}
	if err != nil {
		db.broken = fmt.Errorf("meta: commit failed, uncommitted changes lost: %w", err)
		return db.broken
	}
	db.committed = db.ctr
	return nil
}

// beginTxLocked begins the next long-lived write transaction; without one
// no call can write, so a failure breaks the DB.
func (db *DB) beginTxLocked() error {
	if err := db.c.execScript("BEGIN IMMEDIATE"); err != nil {
		db.broken = fmt.Errorf("meta: begin transaction: %w", err)
		return db.broken
	}
	return nil
}

// syncWAL makes every commit written to the WAL so far durable. A failed
// fsync may have dropped pages the WAL relies on, so it breaks the DB.
func (db *DB) syncWAL() error {
	if err := fsyncWAL(db.path); err != nil {
		db.mu.Lock()
		if db.broken == nil {
			db.broken = fmt.Errorf("meta: fsync WAL, committed changes may be lost: %w", err)
		}
		err = db.broken
		db.mu.Unlock()
		return err
	}
	return nil
}

func (db *DB) syncWALLocked() error {
	if err := fsyncWAL(db.path); err != nil {
		db.broken = fmt.Errorf("meta: fsync WAL, committed changes may be lost: %w", err)
		return db.broken
	}
	return nil
}

// fsyncWAL fsyncs the WAL of the database at path. The WAL lives as long
// as a connection is open (ours is); if it is missing, everything is in
// the database file, which the checkpoint that removed the WAL fsynced.
func fsyncWAL(path string) error {
	f, err := os.Open(path + "-wal")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = unix.Fdatasync(int(f.Fd()))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (db *DB) flushCounters() error {
	for _, kv := range [...]struct {
		name     string
		now, was uint64
	}{
		{ctrNextIno, db.ctr.nextIno, db.committed.nextIno},
		{ctrNextCookie, db.ctr.nextCookie, db.committed.nextCookie},
		{ctrUsedBytes, db.ctr.usedBytes, db.committed.usedBytes},
		{ctrInodes, db.ctr.inodes, db.committed.inodes},
		{ctrIOWritten, db.ctr.io.Written, db.committed.io.Written},
		{ctrIOWAL, db.ctr.io.WAL, db.committed.io.WAL},
		{ctrIOUploaded, db.ctr.io.Uploaded, db.committed.io.Uploaded},
		{ctrIOUploadedRaw, db.ctr.io.UploadedRaw, db.committed.io.UploadedRaw},
		{ctrWALCheckpoint, db.ctr.walCheckpoint, db.committed.walCheckpoint},
	} {
		if kv.now == kv.was {
			continue
		}
		if _, err := db.c.exec("UPDATE counters SET value = ? WHERE name = ?", kv.now, kv.name); err != nil {
			return fmt.Errorf("write counter %s: %w", kv.name, err)
		}
	}
	return nil
}

func (db *DB) usable() error {
	if db.broken != nil {
		return db.broken
	}
	return nil
}

// read runs fn under the lock.
func (db *DB) read(fn func() error) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if err := db.usable(); err != nil {
		return err
	}
	return fn()
}

// write runs fn under the lock inside a savepoint, so that an error undoes
// everything fn did, in the database and in the in-memory counters.
func (db *DB) write(fn func() error) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if err := db.usable(); err != nil {
		return err
	}
	if db.readOnly {
		return syscall.EROFS
	}
	if _, err := db.c.exec("SAVEPOINT op"); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	saved := db.ctr
	err := fn()
	if err != nil {
		db.ctr = saved
		if _, rerr := db.c.exec("ROLLBACK TO op"); rerr != nil {
			db.broken = fmt.Errorf("meta: roll back failed operation: %w", rerr)
			return err
		}
	}
	if _, rerr := db.c.exec("RELEASE op"); rerr != nil {
		db.broken = fmt.Errorf("meta: release savepoint: %w", rerr)
		if err == nil {
			err = db.broken
		}
	}
	return err
}

// Setting returns a volume setting written by Create ("" if absent).
func (db *DB) Setting(ctx context.Context, key string) (string, error) {
	var v string
	err := db.read(func() error {
		_, err := db.c.queryRow("SELECT value FROM settings WHERE key = ?", []any{key}, &v)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read setting %q: %w", key, err)
	}
	return v, nil
}

// Path returns the file the database lives in.
func (db *DB) Path() string { return db.path }

// NewBlockID returns a block id never returned before by this volume, even
// across crashes (ids are handed out from a reserved range whose end is
// committed before any id in it is used).
func (db *DB) NewBlockID(ctx context.Context) (uint64, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if err := db.usable(); err != nil {
		return 0, err
	}
	if db.readOnly {
		return 0, syscall.EROFS
	}
	if db.blockNext >= db.blockEnd {
		end := db.blockNext + blockReserve
		if _, err := db.c.exec("UPDATE counters SET value = ? WHERE name = ?", end, ctrBlockReserved); err != nil {
			return 0, fmt.Errorf("reserve block ids: %w", err)
		}
		// The reservation must be durable before any id in it is used;
		// committing the running transaction with it keeps the prefix
		// property.
		if err := db.commitLocked(); err != nil {
			return 0, err
		}
		db.blockEnd = end
	}
	id := db.blockNext
	db.blockNext++
	return id, nil
}

// attrCols are the inodes columns scanAttr reads, in order.
const attrCols = "ino, mode, nlink, uid, gid, rdev, size, used, atime_ns, mtime_ns, ctime_ns, layout"

// scanAttr reads attrCols from the current row of r, starting at column off.
func scanAttr(r *rows, off int) Attr {
	return Attr{
		Ino:    Ino(r.int(off + 0)),
		Mode:   uint32(r.int(off + 1)),
		Nlink:  uint32(r.int(off + 2)),
		Uid:    uint32(r.int(off + 3)),
		Gid:    uint32(r.int(off + 4)),
		Rdev:   uint32(r.int(off + 5)),
		Size:   uint64(r.int(off + 6)),
		Used:   uint64(r.int(off + 7)),
		Atime:  time.Unix(0, r.int(off+8)),
		Mtime:  time.Unix(0, r.int(off+9)),
		Ctime:  time.Unix(0, r.int(off+10)),
		Layout: Layout(r.int(off + 11)),
	}
}
