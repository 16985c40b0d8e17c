package replica

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"ohm/internal/ohmfs/meta"
	"ohm/internal/ohmfs/objstore"
	"ohm/internal/s3test"
)

func TestMain(m *testing.M) { s3test.Main(m) }

func newDB(t *testing.T) *meta.DB {
	t.Helper()
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "meta.db")
	if err := meta.Create(ctx, p, 0, 0, map[string]string{"uuid": "test"}); err != nil {
		t.Fatal(err)
	}
	db, err := meta.Open(ctx, p, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// names returns the names in the root directory of the database at path.
func names(t *testing.T, path string) map[string]bool {
	t.Helper()
	ctx := context.Background()
	db, err := meta.Open(ctx, path, meta.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	got := map[string]bool{}
	if err := db.ReadDir(ctx, meta.RootIno, 0, false, func(e meta.DirEntry) bool { got[e.Name] = true; return true }); err != nil {
		t.Fatal(err)
	}
	problems, err := db.Check(ctx)
	if err != nil || len(problems) > 0 {
		t.Fatalf("restored database: Check = %v, %v", problems, err)
	}
	return got
}

func targets(t *testing.T) map[string]func(t *testing.T) Target {
	return map[string]func(t *testing.T) Target{
		"file": func(t *testing.T) Target { return FileTarget(filepath.Join(t.TempDir(), "replica")) },
		"s3": func(t *testing.T) Target {
			srv := s3test.Shared(t)
			s, err := objstore.NewS3(context.Background(), "s3://"+srv.NewBucket(t)+"/vol", objstore.S3Options{})
			if err != nil {
				t.Fatal(err)
			}
			return S3Target(s)
		},
	}
}

// TestEveryCommitReplicated commits from a loop, like the vfs does, while
// the replicator runs, and checks after each Flush that a restore has
// exactly what was committed.
func TestEveryCommitReplicated(t *testing.T) {
	for name, target := range targets(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db := newDB(t)
			tg := target(t)
			r, err := Start(ctx, db, tg, Options{Interval: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			// A commit loop of its own, as the vfs has.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					case <-time.After(10 * time.Millisecond):
						db.Commit(ctx)
					}
				}
			}()
			want := map[string]bool{}
			for round := range 4 {
				for i := range 50 {
					n := fmt.Sprintf("f%d-%d", round, i)
					if _, err := db.Mknod(ctx, meta.RootIno, n, 0o100644, 0, 0, 0); err != nil {
						t.Fatal(err)
					}
					want[n] = true
				}
				if err := db.Commit(ctx); err != nil {
					t.Fatal(err)
				}
				if err := r.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				if st := r.Status(); st.LagSeconds != 0 || st.LastError != "" || st.Position == 0 {
					t.Errorf("status after Flush = %+v", st)
				}
				out := filepath.Join(t.TempDir(), "restored.db")
				if err := Restore(ctx, out, tg); err != nil {
					t.Fatal(err)
				}
				if got := names(t, out); len(got) != len(want) {
					t.Fatalf("round %d: restored %d names, want %d", round, len(got), len(want))
				}
			}
			close(stop)
			wg.Wait()
			if err := db.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if err := r.Close(ctx); err != nil {
				t.Fatal(err)
			}
			st, ok := ReadStatus(db.Path())
			if !ok || st.LagSeconds != 0 || st.LastError != "" {
				t.Errorf("recorded status after Close = %+v, %v", st, ok)
			}
		})
	}
}

func TestRestoreEmptyTarget(t *testing.T) {
	for name, target := range targets(t) {
		t.Run(name, func(t *testing.T) {
			err := Restore(context.Background(), filepath.Join(t.TempDir(), "m.db"), target(t))
			if !errors.Is(err, ErrNoReplica) {
				t.Fatalf("Restore from an empty target = %v, want ErrNoReplica", err)
			}
		})
	}
}
