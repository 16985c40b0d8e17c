package computer

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"ohm/internal/egress"
)

// State is where a computer is in its lifecycle. A deleted computer has no
// row at all.
type State string

// The states of a computer.
const (
	StateCreating State = "creating"
	StateRunning  State = "running"
	StateStopped  State = "stopped"
)

// Record is what the registry keeps about a computer.
type Record struct {
	Name       string            `json:"name"`
	State      State             `json:"state"`
	Template   string            `json:"template"`
	DiskSizeMB int               `json:"disk_size_mb"`
	CPUs       float64           `json:"cpus"`
	MemoryMB   int               `json:"memory_mb"`
	PIDs       int               `json:"pids"`
	Env        map[string]string `json:"env,omitempty"`
	// Network gives the computer outbound access beyond its loopback.
	Network   bool      `json:"network"`
	CreatedAt time.Time `json:"created_at"`
	// StopReason says why the computer last stopped (ReasonStopped, an
	// init that died: "init was killed (out of memory)", ...); it stays
	// after the computer starts again. Empty if it never stopped.
	StopReason string `json:"stop_reason,omitempty"`
	// StoppedAt is when it last stopped.
	StoppedAt time.Time `json:"stopped_at,omitzero"`
	// AllowHosts and AllowCIDRs are the computer's egress allow list
	// (internal/egress): with either set, a networked computer reaches
	// only these names and ranges. Stored together in the egress column.
	AllowHosts []string `json:"allow_hosts,omitempty"`
	AllowCIDRs []string `json:"allow_cidrs,omitempty"`
	// IdleTimeoutSeconds is how long the computer may go without exec,
	// shell, file or port traffic before it stops itself (0: never); see
	// IdleTimeout and idle.go. In seconds, as the API carries it.
	IdleTimeoutSeconds float64 `json:"idle_timeout_seconds"`
	// Volume is the URL of the computer's workspace volume when it lives
	// in an object store (s3://bucket/prefix/<name>-<id>, docs/durability.md),
	// its metadata cached in <dir>/workspace; empty for the file volume
	// <dir>/workspace. Set at create (Options.Store), kept for the
	// computer's life; not part of the API.
	Volume string `json:"-"`
}

// Reasons a computer stopped, besides its init's end (which the sandbox
// words).
const (
	ReasonStopped           = "stopped on request"
	ReasonNotRunningAtStart = "not running when the daemon started (the host rebooted or the computer crashed)"
)

// registry is the SQLite table of computers, <dataDir>/ohm.db.
type registry struct{ db *sql.DB }

// migrations take the registry from schema version i (SQLite's
// user_version; 0 is an empty database or one made before versioning,
// whose table already has the columns of migration 0) to version i+1.
// Append only: a registry written by a newer daemon is refused.
var migrations = []string{
	`CREATE TABLE IF NOT EXISTS computers (
	name         TEXT PRIMARY KEY,
	state        TEXT NOT NULL,
	template     TEXT NOT NULL,
	disk_size_mb INTEGER NOT NULL,
	cpus         REAL NOT NULL,
	memory_mb    INTEGER NOT NULL,
	pids         INTEGER NOT NULL,
	env          TEXT NOT NULL DEFAULT '{}',
	created_at   TEXT NOT NULL,
	updated_at   TEXT NOT NULL
);`,
	`ALTER TABLE computers ADD COLUMN network INTEGER NOT NULL DEFAULT 0;`,
	`ALTER TABLE computers ADD COLUMN stop_reason TEXT NOT NULL DEFAULT '';`,
	`ALTER TABLE computers ADD COLUMN stopped_at TEXT NOT NULL DEFAULT '';`,
	// egress: the allow list, {"allow_hosts": [...], "allow_cidrs": [...]}.
	`ALTER TABLE computers ADD COLUMN egress TEXT NOT NULL DEFAULT '{}';`,
	// Computers made before idle stop keep running until stopped (0).
	`ALTER TABLE computers ADD COLUMN idle_timeout_ms INTEGER NOT NULL DEFAULT 0;`,
	portsMigration, // exposed ports (ports.go)
	// Computers made before volumes in object stores have file volumes ('').
	`ALTER TABLE computers ADD COLUMN volume TEXT NOT NULL DEFAULT '';`,
}

// migrate brings the registry's schema up to date, one transaction per
// step so that a crash never leaves it between versions.
func migrate(ctx context.Context, db *sql.DB) error {
	var v int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this ohm knows (%d): upgrade ohm", v, len(migrations))
	}
	for ; v < len(migrations); v++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to schema version %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, v+1)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

func openRegistry(ctx context.Context, path string) (*registry, error) {
	// One connection: the registry is tiny and writes must serialize anyway.
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(FULL)")
	if err != nil {
		return nil, fmt.Errorf("open registry %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if err := migrate(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("open registry %s: %w", path, err)
	}
	return &registry{db: db}, nil
}

func (r *registry) close() error { return r.db.Close() }

// insert adds rec; it fails with CodeExists if the name is taken.
func (r *registry) insert(ctx context.Context, rec Record) error {
	env, err := json.Marshal(rec.Env)
	if err != nil {
		return err
	}
	eg, err := json.Marshal(egressOf(rec))
	if err != nil {
		return err
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	_, err = r.db.ExecContext(ctx, `INSERT INTO computers
		(name, state, template, disk_size_mb, cpus, memory_mb, pids, env, network, egress, created_at, updated_at, idle_timeout_ms, volume)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		rec.Name, rec.State, rec.Template, rec.DiskSizeMB, rec.CPUs, rec.MemoryMB, rec.PIDs, string(env), rec.Network, string(eg),
		rec.CreatedAt.UTC().Format(time.RFC3339Nano), now, rec.IdleTimeout().Milliseconds(), rec.Volume)
	if err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed") {
		return &Error{Code: CodeExists, Msg: fmt.Sprintf("computer %q already exists", rec.Name)}
	}
	if err != nil {
		return fmt.Errorf("record computer %s: %w", rec.Name, err)
	}
	return nil
}

// setState records name's state. A running computer has no stop reason:
// the one of its last stop is cleared.
func (r *registry) setState(ctx context.Context, name string, s State) error {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	q := `UPDATE computers SET state = ?, updated_at = ? WHERE name = ?`
	if s == StateRunning {
		q = `UPDATE computers SET state = ?, stop_reason = '', stopped_at = '', updated_at = ? WHERE name = ?`
	}
	res, err := r.db.ExecContext(ctx, q, s, now, name)
	if err != nil {
		return fmt.Errorf("set state of %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound(name)
	}
	return nil
}

// setStopped records name as stopped, and why.
func (r *registry) setStopped(ctx context.Context, name, reason string) error {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	res, err := r.db.ExecContext(ctx, `UPDATE computers SET state = ?, stop_reason = ?, stopped_at = ?, updated_at = ? WHERE name = ?`,
		StateStopped, reason, now, now, name)
	if err != nil {
		return fmt.Errorf("set state of %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound(name)
	}
	return nil
}

// setEgress records name's allow list.
func (r *registry) setEgress(ctx context.Context, name string, pol egress.Policy) error {
	eg, err := json.Marshal(pol)
	if err != nil {
		return err
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	res, err := r.db.ExecContext(ctx, `UPDATE computers SET egress = ?, updated_at = ? WHERE name = ?`, string(eg), now, name)
	if err != nil {
		return fmt.Errorf("set egress policy of %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound(name)
	}
	return nil
}

func (r *registry) remove(ctx context.Context, name string) error {
	if err := r.removePorts(ctx, name); err != nil {
		return err
	}
	if _, err := r.db.ExecContext(ctx, `DELETE FROM computers WHERE name = ?`, name); err != nil {
		return fmt.Errorf("remove computer %s: %w", name, err)
	}
	return nil
}

const columns = `name, state, template, disk_size_mb, cpus, memory_mb, pids, env, network, created_at, stop_reason, stopped_at, egress, idle_timeout_ms, volume`

func scanRecord(row interface{ Scan(...any) error }) (Record, error) {
	var rec Record
	var env, created, stopped, eg string
	var idleMS int64
	if err := row.Scan(&rec.Name, &rec.State, &rec.Template, &rec.DiskSizeMB, &rec.CPUs, &rec.MemoryMB, &rec.PIDs, &env, &rec.Network, &created, &rec.StopReason, &stopped, &eg, &idleMS, &rec.Volume); err != nil {
		return Record{}, err
	}
	rec.IdleTimeoutSeconds = float64(idleMS) / 1000
	if err := json.Unmarshal([]byte(env), &rec.Env); err != nil {
		return Record{}, fmt.Errorf("computer %s: bad env in registry: %w", rec.Name, err)
	}
	var pol egress.Policy
	if err := json.Unmarshal([]byte(eg), &pol); err != nil {
		return Record{}, fmt.Errorf("computer %s: bad egress policy in registry: %w", rec.Name, err)
	}
	rec.AllowHosts, rec.AllowCIDRs = pol.Hosts, pol.CIDRs
	rec.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
	if stopped != "" {
		rec.StoppedAt, _ = time.Parse(time.RFC3339Nano, stopped)
	}
	return rec, nil
}

func (r *registry) get(ctx context.Context, name string) (Record, error) {
	rec, err := scanRecord(r.db.QueryRowContext(ctx, `SELECT `+columns+` FROM computers WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Record{}, notFound(name)
	}
	if err != nil {
		return Record{}, fmt.Errorf("look up computer %s: %w", name, err)
	}
	return rec, nil
}

func (r *registry) list(ctx context.Context) ([]Record, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT `+columns+` FROM computers ORDER BY created_at, name`)
	if err != nil {
		return nil, fmt.Errorf("list computers: %w", err)
	}
	defer rows.Close()
	var recs []Record
	for rows.Next() {
		rec, err := scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("list computers: %w", err)
		}
		recs = append(recs, rec)
	}
	return recs, rows.Err()
}
