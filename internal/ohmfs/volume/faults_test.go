package volume

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"ohm/internal/ohmfs/meta"
	"ohm/internal/ohmfs/vfs"
	"ohm/internal/s3test"
)

// faultProxy is a reverse proxy on loopback in front of an S3 server that
// fails a share of requests: a 503, a slow answer, a connection dropped
// before the request reaches the server, one dropped after the server
// acted on it (the client never hears that it succeeded), and a response
// cut off in the middle of its body.
type faultProxy struct {
	srv     *httptest.Server
	backend *url.URL
	proxy   *httputil.ReverseProxy
	on      atomic.Bool

	mu  sync.Mutex
	rnd *rand.Rand

	injected atomic.Int64
}

func newFaultProxy(t *testing.T, endpoint string) *faultProxy {
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{backend: u, proxy: httputil.NewSingleHostReverseProxy(u), rnd: rand.New(rand.NewSource(7))}
	// Quiet: dropped connections make the proxy log.
	p.proxy.ErrorLog = nil
	p.srv = httptest.NewServer(p)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *faultProxy) roll() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rnd.Float64()
}

func (p *faultProxy) drop(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			c.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !p.on.Load() {
		p.proxy.ServeHTTP(w, r)
		return
	}
	x := p.roll()
	if x < 0.4 {
		p.proxy.ServeHTTP(w, r)
		return
	}
	p.injected.Add(1)
	switch {
	case x < 0.55: // 503
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
	case x < 0.7: // slow
		time.Sleep(time.Duration(50+p.roll()*250) * time.Millisecond)
		p.proxy.ServeHTTP(w, r)
	case x < 0.8: // dropped before the server sees it
		io.Copy(io.Discard, r.Body)
		p.drop(w)
	case x < 0.9: // dropped after the server acted on it
		out := r.Clone(r.Context())
		out.RequestURI = ""
		out.URL.Scheme, out.URL.Host = p.backend.Scheme, p.backend.Host
		if resp, err := http.DefaultTransport.RoundTrip(out); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		p.drop(w)
	default: // the body cut off half way
		out := r.Clone(r.Context())
		out.RequestURI = ""
		out.URL.Scheme, out.URL.Host = p.backend.Scheme, p.backend.Host
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			p.drop(w)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if len(body) < 64 {
			for k, vs := range resp.Header {
				w.Header()[k] = vs
			}
			w.WriteHeader(resp.StatusCode)
			w.Write(body)
			return
		}
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		p.drop(w)
	}
}

// TestS3Faults runs a workload through the volume and the vfs with a
// fault-injecting proxy in front of the S3 server (six requests in ten
// fail or stall in some way): it completes, every fsync that returned
// success is durable off the host (volume reopened on a fresh cache from
// the replica, read back through the faults), and fsck is clean.
func TestS3Faults(t *testing.T) {
	srv := s3test.Shared(t)
	fp := newFaultProxy(t, srv.Endpoint)
	t.Setenv("AWS_ENDPOINT_URL", fp.srv.URL)
	ctx := context.Background()
	bucket := srv.NewBucket(t)
	vurl := "s3://" + bucket + "/faulty"
	if err := Format(ctx, vurl, FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	fp.on.Store(true)
	v, err := Open(ctx, vurl, OpenOptions{CacheDir: filepath.Join(t.TempDir(), "host1")})
	if err != nil {
		t.Fatalf("open through faults: %v", err)
	}
	fs, err := vfs.New(ctx, v.Meta, v.Blocks, v.Capacity, vfs.Config{})
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewSource(3))
	durable := map[string][]byte{}
	var failed []string
	for i := range 60 {
		size := rnd.Intn(4000)
		if i%15 == 0 {
			size = 3<<20 + rnd.Intn(1<<20) // a few blocks' worth
		}
		data := make([]byte, size)
		rnd.Read(data)
		name := fmt.Sprintf("f%03d", i)
		err := func() error {
			a, fh, err := fs.Create(ctx, vfs.Caller{}, meta.RootIno, name, 0o644, 0)
			if err != nil {
				return err
			}
			defer fs.Release(ctx, a.Ino, fh)
			if _, err := fs.Write(ctx, a.Ino, fh, 0, data); err != nil {
				return err
			}
			if err := fs.Fsync(ctx, a.Ino, fh, false); err != nil {
				return err
			}
			return v.Replica.Flush(ctx) // --fsync=replica
		}()
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		durable[name] = data
	}
	if len(failed) > 0 {
		// With ten tries per request and backoff, none should fail; an
		// error is allowed (EIO to the caller) but must lose nothing else.
		t.Logf("%d writes failed under faults: %v", len(failed), failed)
	}
	if len(durable) < 30 {
		t.Fatalf("only %d of 60 fsyncs succeeded under faults: %v", len(durable), failed)
	}
	if fp.injected.Load() < 20 {
		t.Fatalf("only %d faults injected", fp.injected.Load())
	}
	t.Logf("%d faults injected; %d files fsynced", fp.injected.Load(), len(durable))

	// The host dies without closing anything; its lease is gone (as after
	// expiry), and a fresh host opens the volume through the faults.
	fs.Close(ctx)
	abandon(v)
	if _, err := srv.Client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String("faulty/" + leaseKey)}); err != nil {
		t.Fatal(err)
	}
	v2, err := Open(ctx, vurl, OpenOptions{CacheDir: filepath.Join(t.TempDir(), "host2")})
	if err != nil {
		t.Fatalf("reopen through faults: %v", err)
	}
	fs2, err := vfs.New(ctx, v2.Meta, v2.Blocks, v2.Capacity, vfs.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range durable {
		a, err := fs2.Lookup(ctx, meta.RootIno, name)
		if err != nil {
			t.Errorf("%s was fsynced, then lost: %v", name, err)
			continue
		}
		fh, err := fs2.Open(ctx, a.Ino, 0)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(want)+1)
		n, err := fs2.Read(ctx, a.Ino, fh, 0, got)
		fs2.Release(ctx, a.Ino, fh)
		if err != nil || !bytes.Equal(got[:n], want) {
			t.Errorf("%s: read %d bytes (%v), want %d bytes as written", name, n, err, len(want))
		}
	}
	if err := fs2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	fp.on.Store(false)
	if err := v2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := FsckVolume(ctx, vurl, FsckOptions{Deep: true, CacheDir: filepath.Join(t.TempDir(), "host3")})
	if err != nil || len(r.Problems) > 0 {
		t.Fatalf("fsck after faults: %+v, %v", r, err)
	}
}
