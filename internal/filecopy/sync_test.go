package filecopy

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteSynced(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name    string
		before  string // the file's content before, if it exists
		data    string
		perm    os.FileMode
		wantErr bool
	}{
		{name: "new", data: "ohm\n", perm: 0o644},
		{name: "truncated", before: "a much longer old content", data: "short", perm: 0o600},
		{name: "missing/dir", data: "x", perm: 0o600, wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name)
			if tt.before != "" {
				if err := os.WriteFile(p, []byte(tt.before), tt.perm); err != nil {
					t.Fatal(err)
				}
			}
			err := WriteSynced(p, []byte(tt.data), tt.perm)
			if tt.wantErr {
				if !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("WriteSynced = %v, want not exist", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(p)
			if err != nil || string(got) != tt.data {
				t.Errorf("content %q (%v), want %q", got, err, tt.data)
			}
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if extra := fi.Mode().Perm() &^ tt.perm; extra != 0 {
				t.Errorf("mode %v has bits beyond %v", fi.Mode().Perm(), tt.perm)
			}
		})
	}
}

func TestSyncDir(t *testing.T) {
	dir := t.TempDir()
	if err := SyncDir(dir); err != nil {
		t.Errorf("SyncDir(%s) = %v", dir, err)
	}
	if err := SyncDir(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("SyncDir of a missing directory = %v, want not exist", err)
	}
}
