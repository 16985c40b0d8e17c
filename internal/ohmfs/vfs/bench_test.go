package vfs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"ohm/internal/ohmfs/blockstore"
	"ohm/internal/ohmfs/meta"
)

// BenchmarkSequentialWrite writes 1 GiB in 1 MiB writes and fsyncs.
func BenchmarkSequentialWrite(b *testing.B) {
	ctx := context.Background()
	const total = 1 << 30
	buf := randBytes(1<<20, 1)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		fs, _ := newFS(b, Config{})
		b.StartTimer()
		a, fh, err := fs.Create(ctx, root, meta.RootIno, "big", 0o644, syscall.O_RDWR)
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < total; off += int64(len(buf)) {
			// Vary the data a little so blocks differ.
			buf[0] = byte(off >> 20)
			if _, err := fs.Write(ctx, a.Ino, fh, off, buf); err != nil {
				b.Fatal(err)
			}
		}
		if err := fs.Fsync(ctx, a.Ino, fh, false); err != nil {
			b.Fatal(err)
		}
		fs.Release(ctx, a.Ino, fh)
	}
	b.SetBytes(total)
}

// BenchmarkSequentialRead reads back 1 GiB in 1 MiB reads (blocks cold in
// the block cache only for the first run).
func BenchmarkSequentialRead(b *testing.B) {
	ctx := context.Background()
	const total = 1 << 30
	fs, _ := newFS(b, Config{})
	buf := randBytes(1<<20, 1)
	a, fh, err := fs.Create(ctx, root, meta.RootIno, "big", 0o644, syscall.O_RDWR)
	if err != nil {
		b.Fatal(err)
	}
	for off := int64(0); off < total; off += int64(len(buf)) {
		buf[0] = byte(off >> 20)
		if _, err := fs.Write(ctx, a.Ino, fh, off, buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := fs.Fsync(ctx, a.Ino, fh, false); err != nil {
		b.Fatal(err)
	}
	fs.Release(ctx, a.Ino, fh)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rfh, err := fs.Open(ctx, a.Ino, syscall.O_RDONLY)
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < total; off += int64(len(buf)) {
			if _, err := fs.Read(ctx, a.Ino, rfh, off, buf); err != nil {
				b.Fatal(err)
			}
		}
		fs.Release(ctx, a.Ino, rfh)
	}
	b.SetBytes(total)
}

// BenchmarkSmallFiles creates, writes 4 KiB to and closes 10,000 files,
// then syncs; it reports µs per file.
func BenchmarkSmallFiles(b *testing.B) {
	ctx := context.Background()
	const files = 10000
	data := randBytes(4096, 2)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		fs, _ := newFS(b, Config{})
		d, err := fs.Mkdir(ctx, root, meta.RootIno, "d", 0o755)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		for j := range files {
			a, fh, err := fs.Create(ctx, root, d.Ino, fmt.Sprintf("file%05d", j), 0o644, syscall.O_WRONLY)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := fs.Write(ctx, a.Ino, fh, 0, data); err != nil {
				b.Fatal(err)
			}
			if err := fs.Flush(ctx, a.Ino, fh); err != nil {
				b.Fatal(err)
			}
			if err := fs.Release(ctx, a.Ino, fh); err != nil {
				b.Fatal(err)
			}
			if _, err := fs.GetAttr(ctx, a.Ino); err != nil {
				b.Fatal(err)
			}
		}
		ops := time.Since(start)
		if err := fs.Sync(ctx); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/files, "µs/file")
		b.ReportMetric(float64(ops.Microseconds())/files, "ops-µs/file")
	}
}

// BenchmarkImageColdRead reads a 512 MiB image sequentially through a
// fresh block store (cold cache), as the loop device does: 1 MiB reads,
// two in flight. It reports the process's CPU time per GiB read and how
// many times each pack was loaded (docs/performance.md, "cold read").
func BenchmarkImageColdRead(b *testing.B) {
	ctx := context.Background()
	const total = 512 << 20
	const req = 1 << 20
	v := openVolume(b, b.TempDir(), true)
	fs, err := New(ctx, v.meta, v.bs, 1<<50, Config{CommitInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	ino, fh := makeImage(b, fs, "img")
	buf := randBytes(req, 1)
	for off := int64(0); off < total; off += req {
		buf[0] = byte(off >> 20)
		if _, err := fs.Write(ctx, ino, fh, off, buf); err != nil {
			b.Fatal(err)
		}
	}
	fs.Release(ctx, ino, fh)
	if err := fs.Close(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { v.meta.Close(ctx) })
	var cpu time.Duration
	var loads, packs uint64
	b.ResetTimer()
	for range b.N {
		bs := blockstore.New(v.objs, blockstore.Options{})
		fs, err := New(ctx, v.meta, bs, 1<<50, Config{CommitInterval: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		rfh, err := fs.Open(ctx, ino, syscall.O_RDONLY)
		if err != nil {
			b.Fatal(err)
		}
		before := cpuTime(b)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for w := range 2 {
			wg.Go(func() {
				p := make([]byte, req)
				for off := int64(w * req); off < total; off += 2 * req {
					if _, err := fs.Read(ctx, ino, rfh, off, p); err != nil {
						errs[w] = err
						return
					}
				}
			})
		}
		wg.Wait()
		cpu += cpuTime(b) - before
		if err := errors.Join(errs...); err != nil {
			b.Fatal(err)
		}
		st := bs.Stats()
		loads += st.CacheMisses
		exts, err := v.meta.Extents(ctx, ino, 0, total/pageSize)
		if err != nil {
			b.Fatal(err)
		}
		seen := map[uint64]bool{}
		for _, e := range exts {
			seen[e.Block] = true
		}
		packs += uint64(len(seen))
		fs.Release(ctx, ino, rfh)
		if err := fs.Close(ctx); err != nil {
			b.Fatal(err)
		}
		bs.Close()
	}
	b.SetBytes(total)
	b.ReportMetric(cpu.Seconds()/float64(b.N)/(total/float64(1<<30)), "cpu-s/GiB")
	b.ReportMetric(float64(loads)/float64(packs), "loads/pack")
}

// cpuTime returns the user and system CPU time the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
