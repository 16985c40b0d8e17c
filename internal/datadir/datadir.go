// Package datadir names the directory ohm keeps its state in. The daemon,
// the CLI and the template builder share it, so that OHM_DATA_DIR picks one
// whole installation.
package datadir

import "os"

// EnvVar is the environment variable that overrides the default data
// directory.
const EnvVar = "OHM_DATA_DIR"

// Fallback is the data directory used when EnvVar is unset.
const Fallback = "/var/lib/ohm"

// Default returns the data directory to use when no --data-dir flag was
// given: $OHM_DATA_DIR if set, else /var/lib/ohm.
func Default() string {
	if d := os.Getenv(EnvVar); d != "" {
		return d
	}
	return Fallback
}
