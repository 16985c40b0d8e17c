package volume

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"ohm/internal/ohmfs/objstore"
	"ohm/internal/proc"
)

// leaseKey is the object that fences an S3 volume's single writer.
const leaseKey = "lease"

// LeaseTiming tunes the lease that fences an S3 volume's single writer. A
// holder renews every Renew and stops writing once TTL minus Margin has
// passed since its last successful renewal began, so it has stopped before
// anyone may take the lease over (after TTL, as the lease object says).
// Zero fields take the defaults (30s, 10s, 5s); tests shorten them.
type LeaseTiming struct {
	TTL    time.Duration // how long a renewal keeps the lease; default 30s
	Renew  time.Duration // how often the holder renews; default 10s
	Margin time.Duration // how long before TTL the holder stops writing; default 5s
}

// withDefaults fills the zero fields of t and checks that a holder renews
// before it must stop writing, and stops before the lease expires.
func (t LeaseTiming) withDefaults() (LeaseTiming, error) {
	if t.TTL == 0 {
		t.TTL = 30 * time.Second
	}
	if t.Renew == 0 {
		t.Renew = 10 * time.Second
	}
	if t.Margin == 0 {
		t.Margin = 5 * time.Second
	}
	if t.TTL < 0 || t.Renew < 0 || t.Margin < 0 || t.Margin >= t.TTL || t.Renew >= t.TTL-t.Margin {
		return t, fmt.Errorf("lease timing TTL %v, renew %v, margin %v: want 0 < margin < TTL and 0 < renew < TTL-margin", t.TTL, t.Renew, t.Margin)
	}
	return t, nil
}

// leaseRecord is the content of the lease object.
type leaseRecord struct {
	ID      string    `json:"id"` // random per holder
	Host    string    `json:"host"`
	Holder  Holder    `json:"holder"`
	Expires time.Time `json:"expires"`
	// Boot and PIDNS name the kernel boot and the PID namespace of the
	// holder, so that a holder on this very host and namespace that has
	// died (kill -9, a crash) need not wait out the TTL.
	Boot  string `json:"boot,omitempty"`
	PIDNS string `json:"pidns,omitempty"`
}

// processScope returns this kernel's boot id and this process's PID
// namespace: two processes with equal scopes see the same PIDs.
func processScope() (boot, pidns string) {
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		boot = strings.TrimSpace(string(b))
	}
	pidns, _ = os.Readlink("/proc/self/ns/pid")
	return boot, pidns
}

// deadHere reports whether the lease's holder was a process in this boot
// and PID namespace that no longer runs: no one else can be writing under
// that lease, so it may be taken over before it expires.
func (r leaseRecord) deadHere() bool {
	boot, pidns := processScope()
	if r.Boot == "" || r.Boot != boot || r.PIDNS == "" || r.PIDNS != pidns || r.Holder.PID <= 0 {
		return false
	}
	return !proc.Running(r.Holder.PID)
}

// lease is a held lease on an S3 volume: the claim of the S3 backend.
type lease struct {
	s      *objstore.S3Store
	key    string
	url    string
	timing LeaseTiming // with defaults filled
	rec    leaseRecord
	etag   string
	cond   bool // the server honours If-Match / If-None-Match
	valid  atomic.Int64
	gone   atomic.Bool
	goneCh chan struct{}
	once   sync.Once
	stop   chan struct{}
	done   chan struct{}
}

var errLeaseConflict = errors.New("lease changed hands")

// acquireLease takes the lease of the S3 volume at url for h, or fails with
// a *BusyError if another holder's lease has not expired.
func acquireLease(ctx context.Context, url string, s *objstore.S3Store, h Holder, timing LeaseTiming) (*lease, error) {
	timing, err := timing.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("lease of volume %s: %w", url, err)
	}
	var raw [12]byte
	rand.Read(raw[:])
	host, _ := os.Hostname()
	h.PID = os.Getpid()
	h.Since = time.Now().UTC().Truncate(time.Second)
	l := &lease{
		s: s, key: s.Prefix() + leaseKey, url: url, cond: true, timing: timing,
		rec:    leaseRecord{ID: hex.EncodeToString(raw[:]), Host: host, Holder: h},
		goneCh: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}),
	}
	cur, etag, err := l.read(ctx)
	if err != nil && !errors.Is(err, objstore.ErrNotFound) {
		return nil, fmt.Errorf("lease of volume %s: %w", url, err)
	}
	l.rec.Boot, l.rec.PIDNS = processScope()
	if err == nil && cur.ID != "" && time.Now().Before(cur.Expires) && !cur.deadHere() {
		hh := cur.Holder
		if cur.Host != "" && cur.Host != host {
			hh.Mountpoint = cur.Host + ":" + hh.Mountpoint
		}
		return nil, &BusyError{URL: url, Holder: &hh}
	}
	if err := l.write(ctx, etag); err != nil {
		if errors.Is(err, errLeaseConflict) {
			return nil, &BusyError{URL: url}
		}
		return nil, fmt.Errorf("lease of volume %s: %w", url, err)
	}
	go l.loop()
	return l, nil
}

func (l *lease) read(ctx context.Context) (leaseRecord, string, error) {
	var rec leaseRecord
	out, err := l.s.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(l.s.Bucket()), Key: aws.String(l.key)})
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && (ae.ErrorCode() == "NoSuchKey" || ae.ErrorCode() == "NotFound") {
			return rec, "", objstore.ErrNotFound
		}
		return rec, "", err
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return rec, "", err
	}
	json.Unmarshal(b, &rec) // an unreadable lease is treated as expired
	return rec, aws.ToString(out.ETag), nil
}

// write puts the lease record, conditional on the object still being the
// one with etag (or absent, for ""). A server without conditional writes
// gets a plain write followed by a read-back check.
func (l *lease) write(ctx context.Context, etag string) error {
	start := time.Now()
	l.rec.Expires = start.Add(l.timing.TTL).UTC()
	b, _ := json.Marshal(l.rec)
	in := &s3.PutObjectInput{Bucket: aws.String(l.s.Bucket()), Key: aws.String(l.key), Body: bytes.NewReader(b)}
	if l.cond {
		if etag == "" {
			in.IfNoneMatch = aws.String("*")
		} else {
			in.IfMatch = aws.String(etag)
		}
	}
	out, err := l.s.Client().PutObject(ctx, in)
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) {
			switch ae.ErrorCode() {
			case "PreconditionFailed", "ConditionalRequestConflict":
				// A retry of a write whose answer was lost fails its own
				// condition: the lease may well be ours as written.
				if cur, tag, rerr := l.read(ctx); rerr == nil && cur.ID == l.rec.ID && cur.Expires.Equal(l.rec.Expires) {
					l.etag = tag
					l.valid.Store(start.Add(l.timing.TTL - l.timing.Margin).UnixNano())
					return nil
				}
				return errLeaseConflict
			case "NotImplemented":
				l.cond = false
				return l.write(ctx, etag)
			}
		}
		return err
	}
	newTag := aws.ToString(out.ETag)
	if !l.cond {
		time.Sleep(200 * time.Millisecond)
		cur, tag, err := l.read(ctx)
		if err != nil {
			return err
		}
		if cur.ID != l.rec.ID {
			return errLeaseConflict
		}
		newTag = tag
	}
	l.etag = newTag
	l.valid.Store(start.Add(l.timing.TTL - l.timing.Margin).UnixNano())
	return nil
}

func (l *lease) loop() {
	defer close(l.done)
	t := time.NewTicker(l.timing.Renew)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		if l.gone.Load() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.timing.Renew)
		err := l.write(ctx, l.etag)
		cancel()
		if errors.Is(err, errLeaseConflict) || time.Now().UnixNano() > l.valid.Load() {
			l.markLost()
			return
		}
	}
}

func (l *lease) markLost() {
	l.once.Do(func() {
		l.gone.Store(true)
		close(l.goneCh)
	})
}

func (l *lease) lost() bool { return !l.held() }

func (l *lease) lostCh() <-chan struct{} { return l.goneCh }

// abandon stops writing under the lease without deleting it.
func (l *lease) abandon() { l.markLost() }

func (l *lease) fence(s objstore.Store) objstore.Store { return fencedStore{Store: s, l: l} }

// held reports whether the lease is still ours to write under.
func (l *lease) held() bool {
	if l.gone.Load() {
		return false
	}
	if time.Now().UnixNano() > l.valid.Load() {
		l.markLost()
		return false
	}
	return true
}

// release stops renewing and deletes the lease if it is still ours.
func (l *lease) release(ctx context.Context) {
	close(l.stop)
	<-l.done
	if l.gone.Load() {
		return
	}
	in := &s3.DeleteObjectInput{Bucket: aws.String(l.s.Bucket()), Key: aws.String(l.key)}
	if l.cond && l.etag != "" {
		in.IfMatch = aws.String(l.etag)
	}
	if _, err := l.s.Client().DeleteObject(ctx, in); err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorCode() == "NotImplemented" {
			in.IfMatch = nil
			l.s.Client().DeleteObject(ctx, in)
		}
	}
}

// ErrFenced is returned for writes to a volume whose lease was lost: another
// host may own it now.
var ErrFenced = errors.New("volume lease lost: another host may hold the volume; writes stopped")

// fencedStore refuses writes once its volume's lease is no longer held, so
// that a holder that lost its lease cannot overwrite the new holder's blocks.
type fencedStore struct {
	objstore.Store
	l *lease
}

func (f fencedStore) Put(ctx context.Context, key string, data []byte) error {
	if !f.l.held() {
		return fmt.Errorf("put %s: %w", key, ErrFenced)
	}
	return f.Store.Put(ctx, key, data)
}

func (f fencedStore) Delete(ctx context.Context, key string) error {
	if !f.l.held() {
		return fmt.Errorf("delete %s: %w", key, ErrFenced)
	}
	return f.Store.Delete(ctx, key)
}
