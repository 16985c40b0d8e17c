//go:build linux

package sdk

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

var (
	venvOnce sync.Once
	venvDir  string
	venvErr  error
	venvOut  []byte
)

// python returns the interpreter of a virtual environment that has the
// SDK installed by `pip install ./sdk/python`, with no package index: the
// install a user without one makes.
func python(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("needs python3 (make deps installs it)")
	}
	venvOnce.Do(func() {
		venvDir, venvErr = os.MkdirTemp("", "ohm-sdk-venv-")
		if venvErr != nil {
			return
		}
		venvOut, venvErr = exec.Command(py, "-m", "venv", venvDir).CombinedOutput()
		if venvErr != nil {
			return
		}
		pip := exec.Command(filepath.Join(venvDir, "bin", "pip"), "install", "--no-index", "--disable-pip-version-check", "--quiet", filepath.Join(root(t), "sdk", "python"))
		venvOut, venvErr = pip.CombinedOutput()
	})
	if venvErr != nil {
		t.Fatalf("install the Python SDK with pip: %v\n%s\n(python3 -m venv needs Debian's python3-venv: make deps)", venvErr, venvOut)
	}
	return filepath.Join(venvDir, "bin", "python")
}

// unittest runs the SDK's tests matching pattern from outside its source
// tree, so that `import ohm` is the installed package.
func unittest(t *testing.T, d *daemon, pattern string) *exec.Cmd {
	py := python(t)
	cmd := exec.Command(py, "-m", "unittest", "discover", "-v", "-s", filepath.Join(root(t), "sdk", "python", "tests"), "-p", pattern)
	cmd.Dir = t.TempDir()
	cmd.Env = testEnv(t, d)
	return cmd
}

var pySkipped = regexp.MustCompile(`skipped=\d+|\.\.\. skipped`)

// TestPythonUnit runs the Python SDK's tests that need no daemon: its
// coverage of openapi.json, error mapping, the WebSocket client, safe
// extraction.
func TestPythonUnit(t *testing.T) {
	run(t, unittest(t, nil, "test_unit.py"), pySkipped)
}

// TestPython runs the Python SDK against the daemon, over the Unix socket
// and over TCP with a token.
func TestPython(t *testing.T) {
	d := startDaemon(t)
	run(t, unittest(t, d, "test_daemon.py"), pySkipped)
}

// TestPythonExample runs the README's agent example: a stub model's tool
// calls run in a real computer (over the socket OHM_URL names).
func TestPythonExample(t *testing.T) {
	d := startDaemon(t)
	cmd := exec.Command(python(t), filepath.Join(root(t), "sdk", "python", "examples", "agent_tool.py"))
	cmd.Dir = t.TempDir()
	cmd.Env = append(testEnv(t, nil), "OHM_URL=unix://"+d.socket, "OHM_EXAMPLE_TEMPLATE=minimal")
	out := runOutput(t, cmd)
	for _, want := range []string{`"stdout": "1\n2\n3\n"`, "No such file", "answer: The file has 3 lines."} {
		if !strings.Contains(out, want) {
			t.Errorf("example output lacks %q:\n%s", want, out)
		}
	}
}
