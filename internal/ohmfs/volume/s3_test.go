package volume

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"ohm/internal/ohmfs/meta"
	"ohm/internal/ohmfs/objstore"
	"ohm/internal/ohmfs/vfs"
	"ohm/internal/s3test"
)

func TestMain(m *testing.M) { s3test.Main(m) }

// shortLease is a lease timing that lets a test wait out a lost host's
// lease in seconds.
var shortLease = LeaseTiming{TTL: 3 * time.Second, Renew: 500 * time.Millisecond, Margin: time.Second}

// abandon simulates the death of the host holding v: nothing is closed or
// flushed, the lease is left to expire, and the host ships nothing more.
func abandon(v *Volume) {
	ls := v.claim.(*lease)
	close(ls.stop)
	<-ls.done
	ls.markLost()
	v.lock.release()
}

// TestS3HostLoss writes a mixed tree with fsync on an S3 volume, waits for
// the replica, loses the host (its cache directory too), and opens the
// volume on a fresh cache: every file and attribute is back, and fsck is
// clean.
func TestS3HostLoss(t *testing.T) {
	srv := s3test.Shared(t)
	ctx := context.Background()
	url := "s3://" + srv.NewBucket(t) + "/ws/demo"
	if err := Format(ctx, url, FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, url, OpenOptions{CacheDir: filepath.Join(t.TempDir(), "host1"), Lease: shortLease})
	if err != nil {
		t.Fatal(err)
	}
	fs, err := vfs.New(ctx, v.Meta, v.Blocks, v.Capacity, vfs.Config{})
	if err != nil {
		t.Fatal(err)
	}
	c := vfs.Caller{}
	rnd := rand.New(rand.NewSource(1))
	want := map[string][]byte{}
	write := func(dir meta.Ino, name string, data []byte) meta.Ino {
		a, fh, err := fs.Create(ctx, c, dir, name, 0o644, 0)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(data); off += 1 << 20 {
			end := min(off+1<<20, len(data))
			if _, err := fs.Write(ctx, a.Ino, fh, int64(off), data[off:end]); err != nil {
				t.Fatal(err)
			}
		}
		if err := fs.Fsync(ctx, a.Ino, fh, false); err != nil {
			t.Fatal(err)
		}
		fs.Release(ctx, a.Ino, fh)
		return a.Ino
	}
	big := make([]byte, 9<<20+123)
	rnd.Read(big)
	write(meta.RootIno, "big", big)
	want["big"] = big
	d, err := fs.Mkdir(ctx, c, meta.RootIno, "small", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		b := make([]byte, rnd.Intn(3000))
		rnd.Read(b)
		name := fmt.Sprintf("f%04d", i)
		write(d.Ino, name, b)
		want["small/"+name] = b
	}
	x := write(meta.RootIno, "withxattr", []byte("x"))
	want["withxattr"] = []byte("x")
	if err := fs.SetXattr(ctx, x, "user.color", []byte("blue"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Symlink(ctx, c, meta.RootIno, "link", "small/f0001"); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Link(ctx, x, d.Ino, "hard"); err != nil {
		t.Fatal(err)
	}
	if err := fs.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.Replica.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := v.Replica.Status(); st.LagSeconds != 0 {
		t.Fatalf("replica lag after Flush: %+v", st)
	}

	// The host dies. A second host is fenced until the lease expires.
	abandon(v)
	host2 := filepath.Join(t.TempDir(), "host2")
	var v2 *Volume
	for deadline := time.Now().Add(30 * time.Second); ; {
		v2, err = Open(ctx, url, OpenOptions{CacheDir: host2, Lease: shortLease})
		if err == nil {
			break
		}
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The dead host's writes are fenced from now on.
	if err := v.Objects.Put(ctx, "blocks/zz/late", []byte("late")); !errors.Is(err, ErrFenced) {
		t.Errorf("a write by the host that lost the lease = %v, want ErrFenced", err)
	}
	fs2, err := vfs.New(ctx, v2.Meta, v2.Blocks, v2.Capacity, vfs.Config{})
	if err != nil {
		t.Fatal(err)
	}
	read := func(path string) []byte {
		ino := meta.RootIno
		for _, p := range strings.Split(path, "/") {
			a, err := fs2.Lookup(ctx, ino, p)
			if err != nil {
				t.Fatalf("lookup %s: %v", path, err)
			}
			ino = a.Ino
		}
		fh, err := fs2.Open(ctx, ino, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer fs2.Release(ctx, ino, fh)
		var out []byte
		buf := make([]byte, 1<<20)
		for {
			n, err := fs2.Read(ctx, ino, fh, int64(len(out)), buf)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				return out
			}
			out = append(out, buf[:n]...)
		}
	}
	for p, b := range want {
		if got := read(p); !bytes.Equal(got, b) {
			t.Fatalf("%s after host loss: %d bytes, want %d", p, len(got), len(b))
		}
	}
	xa, err := fs2.Lookup(ctx, meta.RootIno, "withxattr")
	if err != nil {
		t.Fatal(err)
	}
	if val, err := fs2.GetXattr(ctx, xa.Ino, "user.color"); err != nil || string(val) != "blue" || xa.Nlink != 2 {
		t.Errorf("xattr %q %v, nlink %d", val, err, xa.Nlink)
	}
	if la, err := fs2.Lookup(ctx, meta.RootIno, "link"); err != nil {
		t.Error(err)
	} else if target, err := v2.Meta.Readlink(ctx, la.Ino); err != nil || target != "small/f0001" {
		t.Errorf("symlink = %q, %v", target, err)
	}
	if err := fs2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := v2.fsck(ctx, FsckOptions{Deep: true})
	if err != nil || len(r.Problems) > 0 {
		t.Fatalf("fsck after restore: %v, %v", r, err)
	}
	if err := v2.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestS3Lease: a second open is refused while the first holds the volume,
// and a closed volume opens again at once.
func TestS3Lease(t *testing.T) {
	srv := s3test.Shared(t)
	ctx := context.Background()
	url := "s3://" + srv.NewBucket(t) + "/v"
	if err := Format(ctx, url, FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, url, OpenOptions{CacheDir: filepath.Join(t.TempDir(), "a"), Mountpoint: "/mnt/a"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, url, OpenOptions{CacheDir: filepath.Join(t.TempDir(), "b")})
	var be *BusyError
	if !errors.As(err, &be) || be.Holder == nil || !strings.Contains(err.Error(), "/mnt/a") {
		t.Fatalf("second open = %v, want busy naming /mnt/a", err)
	}
	st, err := InspectWith(ctx, url, OpenOptions{CacheDir: filepath.Join(t.TempDir(), "c")})
	if err != nil || !st.Mounted {
		t.Fatalf("status of a held S3 volume: %+v, %v", st, err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	v, err = Open(ctx, url, OpenOptions{CacheDir: filepath.Join(t.TempDir(), "b")})
	if err != nil {
		t.Fatalf("open after the holder closed: %v", err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := Destroy(ctx, url); err != nil {
		t.Fatal(err)
	}
	if _, err := InspectWith(ctx, url, OpenOptions{}); !errors.Is(err, ErrNotVolume) {
		t.Fatalf("status after destroy = %v, want ErrNotVolume", err)
	}
}

func TestS3BadInput(t *testing.T) {
	srv := s3test.Shared(t)
	ctx := context.Background()
	bucket := srv.NewBucket(t)
	s, err := objstore.NewS3(ctx, "s3://"+bucket+"/foreign", objstore.S3Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "somefile", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		url, want string
		format    bool
	}{
		{"s3://" + bucket + "/foreign", "not empty and not an ohmfs volume", true},
		{"s3://" + bucket + "/foreign", "not an ohmfs volume", false},
		{"s3://" + bucket + "/nothing", "not an ohmfs volume", false},
		{"s3://no-such-bucket-x/v", "does not exist", false},
	} {
		if tt.format {
			err = Format(ctx, tt.url, FormatOptions{})
		} else {
			_, err = Open(ctx, tt.url, OpenOptions{CacheDir: t.TempDir()})
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s (format %v) = %v, want one line containing %q", tt.url, tt.format, err, tt.want)
		}
	}
}

// TestS3LeaseDeadHolderHere: a lease whose holder was a process of this
// boot and PID namespace that is gone is taken over at once; one from
// another host (boot) is not, until it expires.
func TestS3LeaseDeadHolderHere(t *testing.T) {
	srv := s3test.Shared(t)
	ctx := context.Background()
	bucket := srv.NewBucket(t)
	url := "s3://" + bucket + "/v"
	if err := Format(ctx, url, FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, url, OpenOptions{CacheDir: filepath.Join(t.TempDir(), "a")})
	if err != nil {
		t.Fatal(err)
	}
	abandon(v)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	setLease := func(edit func(*leaseRecord)) {
		t.Helper()
		rec, _, err := v.claim.(*lease).read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		edit(&rec)
		b, _ := json.Marshal(rec)
		if _, err := srv.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("v/" + leaseKey), Body: bytes.NewReader(b)}); err != nil {
			t.Fatal(err)
		}
	}

	setLease(func(r *leaseRecord) { r.Holder.PID = dead.Process.Pid; r.Boot = "another-host" })
	if _, err := Open(ctx, url, OpenOptions{CacheDir: filepath.Join(t.TempDir(), "b")}); !errors.Is(err, ErrBusy) {
		t.Fatalf("open under another host's unexpired lease = %v, want ErrBusy", err)
	}
	boot, _ := processScope()
	setLease(func(r *leaseRecord) { r.Holder.PID = dead.Process.Pid; r.Boot = boot })
	v2, err := Open(ctx, url, OpenOptions{CacheDir: filepath.Join(t.TempDir(), "c")})
	if err != nil {
		t.Fatalf("open under the lease of a dead process of this host: %v", err)
	}
	if err := v2.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
