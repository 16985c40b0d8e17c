package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"ohm/internal/ohmfs/mount"
)

// runOhm runs the CLI in-process and returns its stdout and error.
func runOhm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func TestFSCommands(t *testing.T) {
	vol := filepath.Join(t.TempDir(), "vol")
	steps := []struct {
		args    []string
		wantOut string // substring of stdout
		wantErr string // substring of the error; "" for success
	}{
		{[]string{"fs", "format", vol, "--capacity", "1T"}, "capacity 1.0T", ""},
		{[]string{"fs", "format", vol}, "", "already holds an ohmfs volume"},
		{[]string{"fs", "format", filepath.Join(vol, "x"), "--capacity", "lots"}, "", "--capacity: invalid size"},
		{[]string{"fs", "format", filepath.Join(vol, "x"), "--capacity", "0"}, "", "--capacity: must be more than 0"},
		{[]string{"fs", "status", vol}, "capacity:  1.0T", ""},
		{[]string{"fs", "status", vol}, "state:     not mounted", ""},
		{[]string{"fs", "fsck", vol}, "clean\n", ""},
		{[]string{"fs", "fsck", vol, "--deep", "--json"}, `"clean": true`, ""},
		{[]string{"fs", "gc", vol, "--grace", "0s"}, "deleted 0 blocks (0B)", ""},
		{[]string{"fs", "gc", vol, "--grace", "-1s"}, "", "--grace: must not be negative"},
		{[]string{"fs", "status", filepath.Join(vol, "missing")}, "", "not an ohmfs volume"},
		{[]string{"fs", "destroy", filepath.Join(vol, "meta")}, "", "not an ohmfs volume"},
		{[]string{"fs", "destroy", vol}, "destroyed " + vol, ""},
		{[]string{"fs", "status", vol}, "", "not an ohmfs volume (no such directory)"},
		{[]string{"fs", "status"}, "", "accepts 1 arg"},
	}
	for _, s := range steps {
		out, err := runOhm(t, s.args...)
		if s.wantErr == "" && err != nil {
			t.Fatalf("ohm %s: %v", strings.Join(s.args, " "), err)
		}
		if s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)) {
			t.Fatalf("ohm %s: error %v, want one containing %q", strings.Join(s.args, " "), err, s.wantErr)
		}
		if !strings.Contains(out, s.wantOut) {
			t.Fatalf("ohm %s printed %q, want %q in it", strings.Join(s.args, " "), out, s.wantOut)
		}
	}
}

func TestFSStatusJSON(t *testing.T) {
	vol := filepath.Join(t.TempDir(), "vol")
	if _, err := runOhm(t, "fs", "format", vol); err != nil {
		t.Fatal(err)
	}
	out, err := runOhm(t, "fs", "status", vol, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		URL      string `json:"url"`
		Capacity uint64 `json:"capacity_bytes"`
		Files    uint64 `json:"files"`
		Mounted  bool   `json:"mounted"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json printed %q: %v", out, err)
	}
	if st.URL != vol || st.Capacity != 1<<50 || st.Files != 1 || st.Mounted {
		t.Errorf("status --json = %+v", st)
	}
	var ec exitCodeError
	if _, err := runOhm(t, "fs", "fsck", vol, "--json"); errors.As(err, &ec) {
		t.Errorf("fsck --json of a clean volume exited %d", ec.code)
	}
}

// TestMountArgsRoundTrip: what mount.Start runs (Config.Args) parses
// back into the same Config, so a detached mount serves what was asked.
func TestMountArgsRoundTrip(t *testing.T) {
	for _, c := range []mount.Config{
		{Volume: "/var/lib/v", Mountpoint: "/mnt/a", CacheBytes: 256 << 20, Reserve: 1 << 30, Fsync: mount.FsyncLocal},
		{Volume: "s3://b/p", Mountpoint: "/mnt/b", CacheBytes: 1, Reserve: 0, CacheDir: "/var/cache/x", Fsync: mount.FsyncReplica,
			Debug: true, NoWritebackCache: true, CPUProfile: "/tmp/p"},
	} {
		cmd := newMountCmd()
		if err := cmd.ParseFlags(c.Args()[2:]); err != nil {
			t.Fatalf("parse %q: %v", c.Args(), err)
		}
		got, err := mountConfig(cmd, cmd.Flags().Args())
		if err != nil {
			t.Fatalf("config from %q: %v", c.Args(), err)
		}
		if got != c {
			t.Errorf("Args %q parse back to %+v, want %+v", c.Args(), got, c)
		}
	}
}
