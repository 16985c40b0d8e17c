package blockstore

import (
	"context"
	"testing"
)

// BenchmarkPut and BenchmarkGet measure whole-block throughput through the
// file object store (Put includes fsync, so it measures the disk too);
// BenchmarkEncode and BenchmarkDecode measure the CPU cost of the format
// alone (lz4 and CRC-32C).
func benchData() []struct {
	name string
	data []byte
} {
	return []struct {
		name string
		data []byte
	}{
		{"digest", compressible(4 << 20)},
		{"text", text(4 << 20)},
		{"random", randomBytes(4 << 20)},
	}
}

func BenchmarkPut(b *testing.B) {
	for _, bd := range benchData() {
		b.Run(bd.name, func(b *testing.B) {
			s, _ := newTestStore(b, Options{CacheBytes: -1})
			b.SetBytes(int64(len(bd.data)))
			for i := 0; b.Loop(); i++ {
				if err := s.Put(context.Background(), uint64(i), bd.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkGet(b *testing.B) {
	for _, bd := range benchData() {
		b.Run(bd.name, func(b *testing.B) {
			s, _ := newTestStore(b, Options{CacheBytes: -1})
			const n = 16
			for i := range n {
				if err := s.Put(context.Background(), uint64(i), bd.data); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(bd.data)))
			for i := 0; b.Loop(); i++ {
				if _, err := s.Get(context.Background(), uint64(i%n)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncode(b *testing.B) {
	s := New(nil, Options{})
	for _, bd := range benchData() {
		b.Run(bd.name, func(b *testing.B) {
			b.SetBytes(int64(len(bd.data)))
			for b.Loop() {
				obj, err := s.encode(bd.data)
				if err != nil {
					b.Fatal(err)
				}
				s.putBuf(obj)
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	s := New(nil, Options{})
	for _, bd := range benchData() {
		b.Run(bd.name, func(b *testing.B) {
			obj, err := s.encode(bd.data)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(bd.data)))
			for b.Loop() {
				if _, err := decode(obj); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
