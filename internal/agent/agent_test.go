package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestFrameRoundTrip(t *testing.T) {
	for _, payload := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("ab"), 40000)} {
		var buf bytes.Buffer
		if err := WriteFrame(&buf, FrameStdout, payload); err != nil {
			t.Fatal(err)
		}
		typ, got, err := ReadFrame(&buf)
		if err != nil || typ != FrameStdout || !bytes.Equal(got, payload) {
			t.Errorf("round trip of %d bytes: %d %d bytes %v", len(payload), typ, len(got), err)
		}
	}
	if err := WriteFrame(&bytes.Buffer{}, FrameStdout, make([]byte, MaxFrame+1)); err == nil {
		t.Error("oversized frame written")
	}
	hdr := []byte{FrameStdout, 0xff, 0xff, 0xff, 0xff}
	if _, _, err := ReadFrame(bytes.NewReader(hdr)); err == nil {
		t.Error("oversized frame read")
	}
	if _, _, err := ReadFrame(bytes.NewReader([]byte{FrameStdout, 0, 0, 0, 5, 'a'})); err == nil {
		t.Error("truncated frame read")
	}
}

func TestDedupEnv(t *testing.T) {
	tests := []struct{ in, want []string }{
		{nil, []string{}},
		{[]string{"A=1", "B=2"}, []string{"A=1", "B=2"}},
		{[]string{"A=1", "B=2", "A=3"}, []string{"A=3", "B=2"}},
		{[]string{"A=1", "A="}, []string{"A="}},
	}
	for _, tt := range tests {
		if got := dedupEnv(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("dedupEnv(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "tool"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "data"), nil, 0o644)
	if p, err := lookPath("tool", "/nonexistent:"+dir); err != nil || p != filepath.Join(dir, "tool") {
		t.Errorf("lookPath(tool) = %q, %v", p, err)
	}
	if _, err := lookPath("missing", dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lookPath(missing) = %v, want not exist", err)
	}
	if _, err := lookPath("data", dir); !errors.Is(err, os.ErrPermission) {
		t.Errorf("lookPath(data) = %v, want permission denied", err)
	}
}

// TestServe runs the agent in this process (not as PID 1) and runs
// commands through its socket as root.
func TestServe(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the agent sets the credentials of what it runs")
	}
	socket := filepath.Join(t.TempDir(), "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, socket) }()

	var c net.Conn
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err = net.Dial("unix", socket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent never listened: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close()

	exec := func(req Request, stdin string) (stdout, stderr string, code int) {
		t.Helper()
		c, err := net.Dial("unix", socket)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		payload, _ := json.Marshal(req)
		WriteFrame(c, FrameStart, payload)
		if stdin != "" {
			WriteFrame(c, FrameStdin, []byte(stdin))
		}
		WriteFrame(c, FrameStdinEOF, nil)
		var out, errb bytes.Buffer
		for {
			typ, p, err := ReadFrame(c)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			switch typ {
			case FrameStdout:
				out.Write(p)
			case FrameStderr:
				errb.Write(p)
			case FrameExit:
				return out.String(), errb.String(), int(int32(binary.BigEndian.Uint32(p)))
			case FrameError:
				t.Fatalf("agent error: %s", p)
			}
		}
	}

	tests := []struct {
		name   string
		req    Request
		stdin  string
		out    string
		errOut string
		code   int
	}{
		{"stdout and stderr", Request{Argv: []string{"sh", "-c", "echo out; echo err >&2"}, User: "root"}, "", "out\n", "err\n", 0},
		{"exit code", Request{Argv: []string{"sh", "-c", "exit 7"}, User: "root"}, "", "", "", 7},
		{"signal", Request{Argv: []string{"sh", "-c", "kill -TERM $$"}, User: "root"}, "", "", "", 128 + 15},
		{"stdin", Request{Argv: []string{"cat"}, User: "root"}, "piped", "piped", "", 0},
		{"env and workdir", Request{Argv: []string{"sh", "-c", "echo $X; pwd"}, User: "root", Env: []string{"X=y"}, Workdir: "/tmp"}, "", "y\n/tmp\n", "", 0},
		{"timeout", Request{Argv: []string{"sleep", "30"}, User: "root", TimeoutMS: 50}, "", "", "", 128 + 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := exec(tt.req, tt.stdin)
			if out != tt.out || errOut != tt.errOut || code != tt.code {
				t.Errorf("got (%q, %q, %d), want (%q, %q, %d)", out, errOut, code, tt.out, tt.errOut, tt.code)
			}
		})
	}

	// Shutdown ends the commands still running: once the command has said
	// it runs, the agent is stopped, and the command exits by SIGTERM.
	c, err = net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	payload, _ := json.Marshal(Request{Argv: []string{"sh", "-c", "echo started; exec sleep 30"}, User: "root"})
	WriteFrame(c, FrameStart, payload)
	WriteFrame(c, FrameStdinEOF, nil)
	next := func() (byte, []byte) {
		t.Helper()
		typ, p, err := ReadFrame(c)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if typ == FrameError {
			t.Fatalf("agent error: %s", p)
		}
		return typ, p
	}
	var out bytes.Buffer
	for out.String() != "started\n" {
		switch typ, p := next(); typ {
		case FrameStdout:
			out.Write(p)
		case FrameExit:
			t.Fatalf("the command exited before shutdown (stdout %q)", out.String())
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not shut down")
	}
	for {
		if typ, p := next(); typ == FrameExit {
			if code := int(int32(binary.BigEndian.Uint32(p))); code != 128+15 {
				t.Errorf("the running command exited %d at shutdown, want %d (SIGTERM)", code, 128+15)
			}
			break
		}
	}
}
