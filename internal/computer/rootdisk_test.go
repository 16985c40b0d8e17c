package computer

import (
	"os"
	"path/filepath"
	"testing"
)

// rootOccupied counts what a root disk takes of the host already,
// wherever it lives: a local image by its blocks, one in the volume by
// what was noted when it was last closed (its volume is not mounted
// here), never more than the disk's size, and nothing when unknown.
func TestRootOccupied(t *testing.T) {
	tests := []struct {
		name   string
		local  int64  // bytes written to a local root.img (-1: none)
		noted  string // content of root.used ("": none)
		sizeMB int
		want   int64
	}{
		{"local image", 1 << 20, "", 64, 1 << 20},
		{"local image wins over a note", 1 << 20, "5000000", 64, 1 << 20},
		{"in the volume, noted", -1, "3145728\n", 64, 3 << 20},
		{"in the volume, noted past its size", -1, "999999999999", 64, 64 << 20},
		{"in the volume, nothing noted", -1, "", 64, 0},
		{"in the volume, a bad note", -1, "lots", 64, 0},
		{"in the volume, a negative note", -1, "-5", 64, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Manager{dataDir: t.TempDir(), ws: NewBlockWorkspace("/nonexistent/ohm")}
			const name = "c"
			if err := os.MkdirAll(filepath.Join(m.dir(name), "sandbox"), 0o700); err != nil {
				t.Fatal(err)
			}
			if tt.local >= 0 {
				if err := os.WriteFile(m.localRootImage(name), make([]byte, tt.local), 0o600); err != nil {
					t.Fatal(err)
				}
				f, _ := os.OpenFile(m.localRootImage(name), os.O_RDWR, 0)
				f.Truncate(int64(tt.sizeMB) << 20) // sparse beyond what was written
				f.Sync()
				f.Close()
			}
			if tt.noted != "" {
				if err := os.WriteFile(m.rootUsedFile(name), []byte(tt.noted), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if got := m.rootInVolume(name); got != (tt.local < 0) {
				t.Errorf("rootInVolume = %v with a local image: %v", got, tt.local >= 0)
			}
			got := m.rootOccupied(Record{Name: name, DiskSizeMB: tt.sizeMB})
			if tt.local >= 0 {
				// Blocks as the host filesystem allocates them: at least what was written.
				if got < tt.want || got > tt.want+1<<20 {
					t.Errorf("rootOccupied = %d, want about %d", got, tt.want)
				}
				return
			}
			if got != tt.want {
				t.Errorf("rootOccupied = %d, want %d", got, tt.want)
			}
		})
	}
}
