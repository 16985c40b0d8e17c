package meta

import (
	"strconv"
	"syscall"
	"testing"
	"time"
)

// commitEvery is how many operations the benchmarks run between commits,
// roughly what a busy volume does in its 1 s commit interval.
const commitEvery = 4096

func benchDB(b *testing.B) *DB {
	db, _ := newTestDB(b)
	return db
}

// cpuTime is the CPU time (user and system, all threads) the process used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startCPU resets the timer and arranges for the benchmark to report CPU
// nanoseconds per operation, which unlike ns/op does not depend on what
// else the machine runs.
func startCPU(b *testing.B) {
	b.ReportAllocs()
	start := cpuTime()
	b.Cleanup(func() {
		b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
	})
	b.ResetTimer()
}

func maybeCommit(b *testing.B, db *DB, i int) {
	if i%commitEvery == commitEvery-1 {
		if err := db.Commit(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreateUnlink is the small-file cycle: create, lookup, unlink,
// purge.
func BenchmarkCreateUnlink(b *testing.B) {
	db := benchDB(b)
	d := mkdir(b, db, RootIno, "d")
	startCPU(b)
	for i := range b.N {
		name := "file" + strconv.Itoa(i)
		a, err := db.Mknod(ctx, d.Ino, name, syscall.S_IFREG|0o644, 0, 1000, 1000)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := db.Lookup(ctx, d.Ino, name); err != nil {
			b.Fatal(err)
		}
		if _, err := db.Unlink(ctx, d.Ino, name); err != nil {
			b.Fatal(err)
		}
		if err := db.Purge(ctx, a.Ino); err != nil {
			b.Fatal(err)
		}
		maybeCommit(b, db, i)
	}
}

func BenchmarkMknod(b *testing.B) {
	db := benchDB(b)
	d := mkdir(b, db, RootIno, "d")
	startCPU(b)
	for i := range b.N {
		if _, err := db.Mknod(ctx, d.Ino, "file"+strconv.Itoa(i), syscall.S_IFREG|0o644, 0, 1000, 1000); err != nil {
			b.Fatal(err)
		}
		maybeCommit(b, db, i)
	}
}

func populate(b *testing.B, db *DB, n int) (Ino, []Ino) {
	d := mkdir(b, db, RootIno, "d")
	inos := make([]Ino, n)
	for i := range n {
		inos[i] = mkfile(b, db, d.Ino, "file"+strconv.Itoa(i)).Ino
	}
	if err := db.Commit(ctx); err != nil {
		b.Fatal(err)
	}
	return d.Ino, inos
}

func BenchmarkLookup(b *testing.B) {
	db := benchDB(b)
	d, _ := populate(b, db, 10000)
	startCPU(b)
	for i := range b.N {
		if _, err := db.Lookup(ctx, d, "file"+strconv.Itoa(i%10000)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLookupMissing(b *testing.B) {
	db := benchDB(b)
	d, _ := populate(b, db, 1000)
	startCPU(b)
	for range b.N {
		if _, err := db.Lookup(ctx, d, "nope"); err != syscall.ENOENT {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetAttr(b *testing.B) {
	db := benchDB(b)
	_, inos := populate(b, db, 10000)
	startCPU(b)
	for i := range b.N {
		if _, err := db.GetAttr(ctx, inos[i%len(inos)]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSetAttrMtime(b *testing.B) {
	db := benchDB(b)
	_, inos := populate(b, db, 1000)
	now := time.Now()
	startCPU(b)
	for i := range b.N {
		if _, err := db.SetAttr(ctx, inos[i%len(inos)], SetAttr{Mtime: &now}); err != nil {
			b.Fatal(err)
		}
		maybeCommit(b, db, i)
	}
}

// BenchmarkReadDirPlus reports the cost per entry of listing a directory
// with attributes.
func BenchmarkReadDirPlus(b *testing.B) {
	db := benchDB(b)
	d, _ := populate(b, db, 1000)
	startCPU(b)
	n := 0
	for n < b.N {
		err := db.ReadDir(ctx, d, 0, true, func(DirEntry) bool {
			n++
			return n < b.N
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdateFile is the flush of a small file's inline data, and of a
// large file's block reference.
func BenchmarkUpdateFile(b *testing.B) {
	for _, size := range []int{4 << 10, 64 << 10, 0} {
		name := "inline" + strconv.Itoa(size>>10) + "K"
		if size == 0 {
			name = "block"
		}
		b.Run(name, func(b *testing.B) {
			db := benchDB(b)
			_, inos := populate(b, db, 1000)
			data := make([]byte, size)
			startCPU(b)
			for i := range b.N {
				c := Chunk{Index: 0, Len: uint32(size), Inline: data}
				if size == 0 {
					c = Chunk{Index: uint64(i % 100), Len: ChunkSize, BlockID: uint64(i + 1)}
				}
				_, err := db.UpdateFile(ctx, inos[i%len(inos)], FileUpdate{Chunks: []Chunk{c}, Size: 100 * ChunkSize})
				if err != nil {
					b.Fatal(err)
				}
				maybeCommit(b, db, i)
			}
		})
	}
}

// BenchmarkCommit is one group commit of a small batch (fsync included).
func BenchmarkCommit(b *testing.B) {
	db := benchDB(b)
	d := mkdir(b, db, RootIno, "d")
	startCPU(b)
	for i := range b.N {
		mkfile(b, db, d.Ino, "f"+strconv.Itoa(i))
		if err := db.Commit(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
