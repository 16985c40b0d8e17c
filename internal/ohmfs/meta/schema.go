package meta

// migrations are the schema's history: migrations[i] takes a database from
// schema version i to i+1 (PRAGMA user_version). Append only; never edit a
// step that has shipped.
var migrations = []string{
	// Version 1.
	`
CREATE TABLE inodes (
	ino      INTEGER PRIMARY KEY,
	mode     INTEGER NOT NULL,
	nlink    INTEGER NOT NULL,
	uid      INTEGER NOT NULL,
	gid      INTEGER NOT NULL,
	rdev     INTEGER NOT NULL DEFAULT 0,
	size     INTEGER NOT NULL DEFAULT 0,
	used     INTEGER NOT NULL DEFAULT 0,
	atime_ns INTEGER NOT NULL,
	mtime_ns INTEGER NOT NULL,
	ctime_ns INTEGER NOT NULL,
	parent   INTEGER NOT NULL DEFAULT 0, -- directories only
	target   TEXT                        -- symlinks only
);
CREATE INDEX inodes_orphans ON inodes(ino) WHERE nlink = 0;

CREATE TABLE dentries (
	parent INTEGER NOT NULL,
	name   TEXT NOT NULL,
	ino    INTEGER NOT NULL,
	cookie INTEGER NOT NULL,
	PRIMARY KEY (parent, name)
) WITHOUT ROWID;
CREATE UNIQUE INDEX dentries_cookie ON dentries(parent, cookie);

-- chunks and xattrs hold blobs of up to 64 KiB (inline data, values), so
-- they are rowid tables with a unique index: in a WITHOUT ROWID table the
-- whole row is the key, and every search reads the overflow pages of the
-- rows it passes (measured: a 4 KiB inline update cost 2x more).
CREATE TABLE chunks (
	ino      INTEGER NOT NULL,
	idx      INTEGER NOT NULL,
	len      INTEGER NOT NULL,
	block_id INTEGER NOT NULL DEFAULT 0,
	inline   BLOB
);
CREATE UNIQUE INDEX chunks_key ON chunks(ino, idx);

CREATE TABLE xattrs (
	ino   INTEGER NOT NULL,
	name  TEXT NOT NULL,
	value BLOB NOT NULL
);
CREATE UNIQUE INDEX xattrs_key ON xattrs(ino, name);

CREATE TABLE freed_blocks (
	id          INTEGER PRIMARY KEY,
	freed_at_ns INTEGER NOT NULL
);

CREATE TABLE counters (
	name  TEXT PRIMARY KEY,
	value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE settings (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
) WITHOUT ROWID;
`,

	// Version 2: a chunk's used bytes, its 4 KiB pages that hold data, so
	// that st_blocks (and du) count a hole punched or left inside a chunk.
	// Chunks written before counted their whole length.
	`
ALTER TABLE chunks ADD COLUMN used INTEGER NOT NULL DEFAULT 0;
UPDATE chunks SET used = len;
`,

	// Version 3: device images (see docs/durability.md). An image's data is
	// an extent map at 4 KiB pages into packs: immutable blocks that hold
	// the pages of many writes, folded from the local write-ahead log. A
	// pack's live count is the pages extents of all files reference in it,
	// so that a clone shares it and gc frees it only when nothing does.
	// chunks_block finds the other chunks of a block shared by clones.
	// The io_* counters are cumulative byte counts for write
	// amplification.
	`
ALTER TABLE inodes ADD COLUMN layout INTEGER NOT NULL DEFAULT 0;

CREATE TABLE extents (
	ino   INTEGER NOT NULL,
	page  INTEGER NOT NULL,
	n     INTEGER NOT NULL,
	block INTEGER NOT NULL,
	bpage INTEGER NOT NULL,
	PRIMARY KEY (ino, page)
) WITHOUT ROWID;
CREATE INDEX extents_block ON extents(block);

CREATE TABLE packs (
	id         INTEGER PRIMARY KEY,
	pages      INTEGER NOT NULL,
	live       INTEGER NOT NULL,
	created_ns INTEGER NOT NULL
);

CREATE INDEX chunks_block ON chunks(block_id) WHERE block_id != 0;

INSERT INTO counters (name, value) VALUES
	('io_written', 0), ('io_wal', 0), ('io_uploaded', 0), ('io_uploaded_raw', 0), ('wal_checkpoint', 0);
INSERT INTO settings (key, value) VALUES ('wal_id', '');
`,
}

// Counter names in the counters table.
const (
	ctrNextIno       = "next_ino"       // the next inode number to hand out
	ctrNextCookie    = "next_cookie"    // the next directory entry cookie
	ctrBlockReserved = "block_reserved" // block ids below this may have been handed out
	ctrUsedBytes     = "used_bytes"     // sum of inodes.used
	ctrInodes        = "inodes"         // count of inodes rows

	ctrIOWritten     = "io_written"      // bytes of file writes received
	ctrIOWAL         = "io_wal"          // bytes appended to the write-ahead log of device images
	ctrIOUploaded    = "io_uploaded"     // bytes of blocks stored, as stored (compressed)
	ctrIOUploadedRaw = "io_uploaded_raw" // the same blocks before compression
	ctrWALCheckpoint = "wal_checkpoint"  // the WAL position the extents cover everything before
)
