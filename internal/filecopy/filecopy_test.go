package filecopy

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestNew(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	data := bytes.Repeat([]byte("ohm "), 100_000)
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		dst   string
		exist bool // New must refuse with os.ErrExist
	}{
		{"new file", "copy", false},
		{"existing file", "victim", true},
		{"symlink", "link", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dst := filepath.Join(dir, tt.dst)
			err := New(src, dst, 0o640)
			if tt.exist {
				if !errors.Is(err, os.ErrExist) {
					t.Fatalf("New onto %s: %v, want ErrExist", tt.dst, err)
				}
				if b, _ := os.ReadFile(victim); string(b) != "keep" {
					t.Fatalf("the file behind %s changed: %q", tt.dst, b)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(dst)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("copy differs (%d bytes, %v)", len(got), err)
			}
			if fi, _ := os.Stat(dst); fi.Mode().Perm()&^0o640 != 0 {
				t.Errorf("mode %v, want at most 0640", fi.Mode().Perm())
			}
		})
	}
	if err := New(filepath.Join(dir, "missing"), filepath.Join(dir, "x"), 0o600); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("copy of a missing file: %v", err)
	}
}
