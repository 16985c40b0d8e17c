package computer

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCopySkel(t *testing.T) {
	skel, home := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(skel, ".bashrc"), []byte("PS1=x"), 0o644)
	os.WriteFile(filepath.Join(skel, ".profile"), []byte("skel profile"), 0o644)
	os.Mkdir(filepath.Join(skel, ".config"), 0o755)
	os.WriteFile(filepath.Join(skel, ".config", "c"), []byte("c"), 0o600)
	os.WriteFile(filepath.Join(home, ".profile"), []byte("mine"), 0o644)
	if err := copySkel(skel, home); err != nil {
		if os.Geteuid() != 0 {
			t.Skipf("chown needs root: %v", err)
		}
		t.Fatal(err)
	}
	for p, want := range map[string]string{".bashrc": "PS1=x", ".profile": "mine", ".config/c": "c"} {
		if got, err := os.ReadFile(filepath.Join(home, p)); err != nil || string(got) != want {
			t.Errorf("%s: %q, %v, want %q", p, got, err, want)
		}
	}
	if err := copySkel(filepath.Join(skel, "missing"), home); err != nil {
		t.Errorf("no skel: %v", err)
	}
}
