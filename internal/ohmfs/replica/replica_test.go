package replica

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
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

// TestS3WithCABundle replicates to S3 and restores with AWS_CA_BUNDLE set,
// as it is on hosts that trust a private CA: the replica goes through the
// store's own client, which loads the bundle (Litestream's S3 client
// refused to start with one).
func TestS3WithCABundle(t *testing.T) {
	srv := s3test.Shared(t)
	t.Setenv("AWS_CA_BUNDLE", writeCABundle(t))
	ctx := context.Background()
	s, err := objstore.NewS3(ctx, "s3://"+srv.NewBucket(t)+"/vol", objstore.S3Options{})
	if err != nil {
		t.Fatal(err)
	}
	db := newDB(t)
	tg := S3Target(s)
	r, err := Start(ctx, db, tg, Options{})
	if err != nil {
		t.Fatalf("Start with AWS_CA_BUNDLE set: %v", err)
	}
	if _, err := db.Mknod(ctx, meta.RootIno, "f", 0o100644, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := db.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "restored.db")
	if err := Restore(ctx, out, tg); err != nil {
		t.Fatal(err)
	}
	if got := names(t, out); !got["f"] {
		t.Fatalf("restored names %v, want f", got)
	}
}

// writeCABundle writes a PEM file with one self-signed CA certificate.
func writeCABundle(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ohm test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
