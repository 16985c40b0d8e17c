package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// codingAgentRoot finds a built coding-agent template: $OHM_TEST_CODING_AGENT
// (its rootfs), or the one in the default data directory. Building one
// takes minutes, so the test skips without it.
func codingAgentRoot(t *testing.T) string {
	t.Helper()
	for _, dir := range []string{os.Getenv("OHM_TEST_CODING_AGENT"), "/var/lib/ohm/templates/coding-agent/rootfs"} {
		if dir == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "usr/bin/sudo")); err == nil {
			return dir
		}
	}
	t.Skip("no built coding-agent template (ohm template build coding-agent, or set OHM_TEST_CODING_AGENT to its rootfs)")
	return ""
}

// TestCodingAgentUnderFilter runs what agents do in the coding-agent
// template under the computer's seccomp filter and capability set: sudo
// (setuid, hence no no_new_privs), package installs with dpkg, compilers,
// interpreters and git.
func TestCodingAgentUnderFilter(t *testing.T) {
	requireRuntime(t)
	root := codingAgentRoot(t)
	spec := newSpec(t, "hamilton", 1024)
	spec.TemplateRoot = root
	s := startSandbox(t, spec)
	defer s.Stop(context.Background(), time.Second)

	for _, tt := range []struct{ name, script, want string }{
		{"sudo", "sudo -n id -u", "0\n"},
		// Quiet: the audit socket is refused as a kernel without audit
		// would, which sudo takes as auditing not configured.
		{"sudo quiet", "sudo -n true 2>&1; id -u", "1000\n"},
		{"dpkg install", `set -e; d=$(mktemp -d); mkdir -p $d/p/DEBIAN $d/p/usr/share/ohmtest
printf 'Package: ohmtest\nVersion: 1.0\nArchitecture: all\nMaintainer: ohm\nDescription: test\n' > $d/p/DEBIAN/control
echo hi > $d/p/usr/share/ohmtest/hi; dpkg-deb -b $d/p $d/ohmtest.deb >/dev/null
sudo -n dpkg -i $d/ohmtest.deb >/dev/null && cat /usr/share/ohmtest/hi && sudo -n dpkg -r ohmtest >/dev/null && sudo -n apt-get -qq check && echo ok`, "hi\nok\n"},
		{"python", `python3 -c 'import os, subprocess, threading, multiprocessing as m
t = threading.Thread(target=print, args=("thread",)); t.start(); t.join()
print(subprocess.run(["echo", "sub"], capture_output=True, text=True).stdout, end="")
with m.Pool(2) as p: print(sum(p.map(abs, [-1, -2])))'`, "thread\nsub\n3\n"},
		{"venv", "python3 -m venv --without-pip /tmp/v && /tmp/v/bin/python -c 'print(1)'", "1\n"},
		{"node", `node -e 'const c = require("child_process"); const w = new (require("worker_threads").Worker)("1", {eval: true}); w.on("exit", () => console.log(c.execSync("echo child").toString().trim()))'`, "child\n"},
		{"c with threads", `cd /tmp && printf '#include <pthread.h>\n#include <stdio.h>\nvoid *f(void *a){return a;}\nint main(){pthread_t t; pthread_create(&t,0,f,0); pthread_join(t,0); puts("threads"); return 0;}\n' > t.c && gcc -pthread -o t t.c && ./t`, "threads\n"},
		{"git", "cd /home/ohm && git init -q r && cd r && echo x > f && git add f && git -c user.email=a@b -c user.name=a commit -qm m && git log --oneline | wc -l", "1\n"},
		{"ps", "ps -e -o comm= | head -1", "ohm\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, s, ExecRequest{Argv: []string{"bash", "-lc", tt.script}, Timeout: 2 * time.Minute})
			if r.code != 0 || r.stdout != tt.want {
				t.Errorf("exit %d, stdout %q, want %q; stderr %s", r.code, r.stdout, tt.want, strings.TrimSpace(r.stderr))
			}
		})
	}
}
