package fileops

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func tarOf(t *testing.T, hdrs ...*tar.Header) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range hdrs {
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(h.Linkname))
		}
		data := h.Linkname
		if h.Typeflag == tar.TypeReg {
			h.Linkname = ""
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(data))
		}
	}
	tw.Close()
	return &b
}

func TestUntarRefusesEscapes(t *testing.T) {
	outside := t.TempDir()
	tests := []struct {
		name string
		hdrs []*tar.Header
	}{
		{"dotdot", []*tar.Header{{Name: "../x", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "x"}}},
		{"absolute", []*tar.Header{{Name: filepath.Join(outside, "x"), Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "x"}}},
		{"unclean", []*tar.Header{{Name: "a/../../x", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "x"}}},
		{"through a symlink", []*tar.Header{
			{Name: "link", Typeflag: tar.TypeSymlink, Linkname: outside},
			{Name: "link/x", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "x"},
		}},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		err := Untar(tarOf(t, tt.hdrs...), dir)
		var fe *Error
		if !errors.As(err, &fe) {
			t.Errorf("%s: %v, want an error", tt.name, err)
		}
		if _, err := os.Stat(filepath.Join(outside, "x")); err == nil {
			t.Fatalf("%s: wrote outside the target directory", tt.name)
		}
	}
}

func TestTarRoundTrip(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "d", "e"), 0o755)
	os.WriteFile(filepath.Join(src, "d", "e", "f"), []byte("data"), 0o600)
	os.Symlink("../elsewhere", filepath.Join(src, "d", "l"))
	var b bytes.Buffer
	if err := Tar(&b, src); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "new")
	if err := Untar(&b, dst); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dst, "d", "e", "f")); err != nil || string(got) != "data" {
		t.Errorf("file: %q, %v", got, err)
	}
	if st, _ := os.Stat(filepath.Join(dst, "d", "e", "f")); st == nil || st.Mode().Perm() != 0o600 {
		t.Errorf("mode not kept: %v", st)
	}
	if l, err := os.Readlink(filepath.Join(dst, "d", "l")); err != nil || l != "../elsewhere" {
		t.Errorf("symlink: %q, %v", l, err)
	}
}

func TestWriteIsAllOrNothing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("old"), 0o640)
	if err := Write(bytes.NewReader([]byte("partial")), p, 100); err == nil {
		t.Error("a short upload succeeded")
	}
	if got, _ := os.ReadFile(p); string(got) != "old" {
		t.Errorf("a short upload changed the file: %q", got)
	}
	if err := Write(bytes.NewReader([]byte("new")), p, 3); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if got, _ := os.ReadFile(p); string(got) != "new" || st.Mode().Perm() != 0o640 {
		t.Errorf("after write: %q mode %v", got, st.Mode())
	}
	if entries, _ := os.ReadDir(filepath.Dir(p)); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}
