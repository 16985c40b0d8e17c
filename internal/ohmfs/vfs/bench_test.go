package vfs

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

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
