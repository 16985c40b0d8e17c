package computer

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"
)

// A registry written before schema versioning (no network column,
// user_version 0) opens, keeps its computers and gains the column.
func TestRegistryMigratesUnversioned(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ohm.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(migrations[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO computers VALUES ('old', 'stopped', 'minimal', 64, 1, 256, 4096, '{}', ?, ?)`,
		time.Now().UTC().Format(time.RFC3339Nano), time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		t.Fatal(err)
	}
	db.Close()

	reg, err := openRegistry(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	old, err := reg.get(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	if old.Network || old.DiskSizeMB != 64 || old.State != StateStopped {
		t.Errorf("migrated record = %+v", old)
	}
	if err := reg.insert(ctx, Record{Name: "new", State: StateStopped, Template: "minimal", DiskSizeMB: 64, Network: true, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	reg.close()

	// Reopening at the current version changes nothing.
	reg, err = openRegistry(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.close()
	got, err := reg.get(ctx, "new")
	if err != nil || !got.Network {
		t.Errorf("new = %+v, %v; want network", got, err)
	}
	var v int
	reg.db.QueryRow(`PRAGMA user_version`).Scan(&v)
	if v != len(migrations) {
		t.Errorf("user_version = %d, want %d", v, len(migrations))
	}
}

// A registry from a newer ohm is refused rather than misread.
func TestRegistryRefusesNewer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ohm.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	db.Exec(`PRAGMA user_version = 99`)
	db.Close()
	if reg, err := openRegistry(context.Background(), path); err == nil {
		reg.close()
		t.Fatal("opened a registry of schema version 99")
	}
}
