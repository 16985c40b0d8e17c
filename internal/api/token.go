package api

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"ohm/client"
)

// TokenPath is where the daemon of dataDir keeps its API token.
func TokenPath(dataDir string) string { return filepath.Join(dataDir, "token") }

// LoadToken returns the API token of dataDir, creating one (32 random
// bytes, base64url, in a 0600 file) if there is none.
func LoadToken(dataDir string) (string, error) {
	b, err := os.ReadFile(TokenPath(dataDir))
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if len(tok) < 32 {
			return "", fmt.Errorf("token file %s is too short; run `ohm token --rotate`", TokenPath(dataDir))
		}
		return tok, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read token: %w", err)
	}
	return RotateToken(dataDir)
}

// RotateToken replaces the API token of dataDir with a new random one and
// returns it. A daemon serving TCP picks it up at its next request.
func RotateToken(dataDir string) (string, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data directory: %w", err)
	}
	b := make([]byte, 32)
	rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	f, err := os.CreateTemp(dataDir, ".token-*")
	if err != nil {
		return "", fmt.Errorf("write token: %w", err)
	}
	defer os.Remove(f.Name())
	// CreateTemp makes the file 0600 already; Chmod is belt and braces.
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.WriteString(tok + "\n")
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), TokenPath(dataDir))
	}
	if err != nil {
		return "", fmt.Errorf("write token: %w", err)
	}
	return tok, nil
}

// tokenAuth requires "Authorization: Bearer <token>" on every request. It
// re-reads the token file when it changes, so `ohm token --rotate` takes
// effect without a restart.
type tokenAuth struct {
	dataDir string
	next    http.Handler

	mu    sync.Mutex
	token []byte
	mtime int64
}

func (a *tokenAuth) current() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st, err := os.Stat(TokenPath(a.dataDir)); err == nil && st.ModTime().UnixNano() != a.mtime {
		if b, err := os.ReadFile(TokenPath(a.dataDir)); err == nil {
			if tok := strings.TrimSpace(string(b)); len(tok) >= 32 {
				a.token, a.mtime = []byte(tok), st.ModTime().UnixNano()
			}
		}
	}
	return a.token
}

func (a *tokenAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	want := a.current()
	if !ok || len(want) == 0 || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ohm"`)
		writeError(w, http.StatusUnauthorized, client.CodeUnauthenticated, "missing or wrong bearer token (see `ohm token`)")
		return
	}
	a.next.ServeHTTP(w, r)
}
