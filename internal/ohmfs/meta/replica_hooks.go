package meta

import "context"

// Quiesce commits the write transaction (as Commit does), runs fn while
// this DB holds no transaction at all, then begins the next one. Calls made
// meanwhile wait.
//
// It exists for the metadata replica: Litestream must take the database's
// write lock for a moment to checkpoint and to start a WAL, and the
// long-lived write transaction otherwise never lets go of it. fn should be
// short (Litestream's local sync is a few milliseconds).
func (db *DB) Quiesce(ctx context.Context, fn func() error) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if err := db.usable(); err != nil {
		return err
	}
	if db.readOnly {
		return fn()
	}
	if err := db.commitTxLocked(); err != nil {
		return err
	}
	ferr := fn()
	if err := db.beginTxLocked(); err != nil {
		return err
	}
	return ferr
}
