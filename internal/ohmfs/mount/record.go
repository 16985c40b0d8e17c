package mount

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"ohm/internal/proc"
)

// RunDir holds one small JSON file per live mount, naming the process
// that serves it, so that Unmount can wait for that process.
const RunDir = "/run/ohm/mounts"

// Record is what a serving process leaves in RunDir while it serves.
type Record struct {
	PID      int `json:"pid"`                // the keeper: Serve's process, which holds the connection
	Server   int `json:"server,omitempty"`   // the process answering the mount now
	Restarts int `json:"restarts,omitempty"` // servers started after the first one died
	// LastDeath is how the last server that died ended ("signal:
	// killed"), at LastDeathAt; empty while none did.
	LastDeath   string    `json:"last_death,omitempty"`
	LastDeathAt time.Time `json:"last_death_at,omitzero"`
	Volume      string    `json:"volume"`
	Mountpoint  string    `json:"mountpoint"`
}

// recordPath is the record of the mount at mountpoint.
func recordPath(mountpoint string) string {
	sum := sha256.Sum256([]byte(mountpoint))
	return filepath.Join(RunDir, hex.EncodeToString(sum[:8])+".json")
}

// writeRecord writes rec atomically and returns its path.
func writeRecord(rec Record) (string, error) {
	path := recordPath(rec.Mountpoint)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return path, fmt.Errorf("record mount: %w", err)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return path, fmt.Errorf("record mount: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return path, fmt.Errorf("record mount: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return path, fmt.Errorf("record mount: %w", err)
	}
	return path, nil
}

// readRecord returns the record of the mount at mountpoint if a process
// it names is alive (the keeper, or the server, which serves on if its
// keeper was killed).
func readRecord(mountpoint string) (Record, bool) {
	var rec Record
	b, err := os.ReadFile(recordPath(mountpoint))
	if err != nil || json.Unmarshal(b, &rec) != nil || rec.Mountpoint != mountpoint || !rec.alive() {
		return Record{}, false
	}
	return rec, true
}

// alive reports whether the keeper or the server of the record runs.
func (rec Record) alive() bool { return proc.Running(rec.PID) || proc.Running(rec.Server) }

// Info returns the record of the live mount at mountpoint (absolute):
// its keeper and server processes, and how many servers were started
// after one died (Restarts), which is what a status report shows of a
// storage process that died under its users.
func Info(mountpoint string) (Record, bool) { return readRecord(filepath.Clean(mountpoint)) }
