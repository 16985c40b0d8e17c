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
	tscOnce sync.Once
	tscErr  error
	tscOut  []byte
)

// typescript builds the TypeScript SDK (and its tests) with tsc, once,
// and returns its directory.
func typescript(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("needs node (make deps installs nodejs)")
	}
	dir := filepath.Join(root(t), "sdk", "typescript")
	tsc := filepath.Join(dir, "node_modules", ".bin", "tsc")
	if _, err := os.Stat(tsc); err != nil {
		t.Skip("needs sdk/typescript/node_modules (make deps runs npm ci there)")
	}
	tscOnce.Do(func() {
		cmd := exec.Command(tsc, "-p", ".")
		cmd.Dir = dir
		tscOut, tscErr = cmd.CombinedOutput()
	})
	if tscErr != nil {
		t.Fatalf("tsc: %v\n%s", tscErr, tscOut)
	}
	return dir
}

var nodeSkipped = regexp.MustCompile(`(?m)^# skipped [1-9]`)

func nodeTest(t *testing.T, d *daemon, file string) *exec.Cmd {
	dir := typescript(t)
	cmd := exec.Command("node", "--test", filepath.Join("dist", "test", file))
	cmd.Dir = dir
	cmd.Env = testEnv(t, d)
	return cmd
}

// TestTypeScriptUnit runs the TypeScript SDK's tests that need no daemon:
// its coverage of openapi.json, error mapping, safe extraction.
func TestTypeScriptUnit(t *testing.T) {
	run(t, nodeTest(t, nil, "unit.test.js"), nodeSkipped)
}

// TestTypeScript runs the TypeScript SDK against the daemon, over the Unix
// socket and over TCP with a token.
func TestTypeScript(t *testing.T) {
	d := startDaemon(t)
	run(t, nodeTest(t, d, "daemon.test.js"), nodeSkipped)
}

// TestTypeScriptExample runs the README's agent example over TCP (OHM_URL
// and OHM_TOKEN): a stub model's tool calls run in a real computer.
func TestTypeScriptExample(t *testing.T) {
	d := startDaemon(t)
	cmd := exec.Command("node", filepath.Join("dist", "examples", "agent-tool.js"))
	cmd.Dir = typescript(t)
	cmd.Env = append(testEnv(t, nil), "OHM_URL="+d.url, "OHM_TOKEN="+d.token, "OHM_EXAMPLE_TEMPLATE=minimal")
	out := runOutput(t, cmd)
	for _, want := range []string{`"stdout":"1\n2\n3\n"`, "No such file", "answer: The file has 3 lines."} {
		if !strings.Contains(out, want) {
			t.Errorf("example output lacks %q:\n%s", want, out)
		}
	}
}
