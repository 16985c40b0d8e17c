package agent

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// user is an account of the computer, read from its /etc/passwd.
type user struct {
	name     string
	uid, gid uint32
	groups   []uint32
	home     string
	shell    string
}

// fallbackUsers are used when the template's /etc/passwd lacks the
// account, so that a bare template still runs commands as the right ids.
var fallbackUsers = map[string]user{
	"root": {name: "root", uid: 0, gid: 0, home: "/root", shell: "/bin/sh"},
	"ohm":  {name: "ohm", uid: 1000, gid: 1000, home: "/home/ohm", shell: "/bin/sh"},
}

// lookupUser resolves name ("" means "ohm") against /etc/passwd and
// /etc/group. A numeric name is a uid.
func lookupUser(name string) (user, error) {
	if name == "" {
		name = "ohm"
	}
	passwd, _ := readColonFile("/etc/passwd")
	var u user
	found := false
	for _, f := range passwd {
		if len(f) < 7 {
			continue
		}
		if f[0] == name || f[2] == name {
			uid, err1 := strconv.ParseUint(f[2], 10, 32)
			gid, err2 := strconv.ParseUint(f[3], 10, 32)
			if err1 != nil || err2 != nil {
				continue
			}
			u = user{name: f[0], uid: uint32(uid), gid: uint32(gid), home: f[5], shell: f[6]}
			found = true
			break
		}
	}
	if !found {
		if fu, ok := fallbackUsers[name]; ok {
			u = fu
		} else if uid, err := strconv.ParseUint(name, 10, 32); err == nil {
			u = user{name: name, uid: uint32(uid), gid: uint32(uid), home: "/", shell: "/bin/sh"}
		} else {
			return user{}, fmt.Errorf("no user %q in the computer", name)
		}
	}
	if u.shell == "" {
		u.shell = "/bin/sh"
	}
	groups, _ := readColonFile("/etc/group")
	u.groups = []uint32{u.gid}
	for _, f := range groups {
		if len(f) < 4 {
			continue
		}
		if !slices.Contains(strings.Split(f[3], ","), u.name) {
			continue
		}
		if gid, err := strconv.ParseUint(f[2], 10, 32); err == nil && !slices.Contains(u.groups, uint32(gid)) {
			u.groups = append(u.groups, uint32(gid))
		}
	}
	return u, nil
}

func readColonFile(path string) ([][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out, sc.Err()
}

// buildEnv is the environment of a command: a default PATH, the agent's
// own environment (the computer's Env), the login variables of u, then the
// request's, later entries replacing earlier ones with the same key.
func buildEnv(u user, req Request) []string {
	env := []string{"PATH=" + DefaultPath}
	if req.TTY {
		env = append(env, "TERM=xterm-256color")
	}
	env = append(env, os.Environ()...)
	env = append(env,
		"HOME="+u.home,
		"USER="+u.name,
		"LOGNAME="+u.name,
		"SHELL="+u.shell,
	)
	env = append(env, req.Env...)
	return dedupEnv(env)
}

// dedupEnv keeps the last value of each key, in first-seen order.
func dedupEnv(env []string) []string {
	idx := make(map[string]int, len(env))
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

func envGet(env []string, key string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}
