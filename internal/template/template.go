// Package template builds and caches the root filesystems computers start
// from. A template is built once into the data directory and then used
// read-only as the lower layer of every computer's overlay.
package template

import (
	"context"
	"errors"
	"io"
)

var errTODO = errors.New("template: not implemented yet")

// Info describes a known template.
type Info struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Built       bool   `json:"built"`
	SizeBytes   uint64 `json:"size_bytes,omitempty"`
	Root        string `json:"root,omitempty"` // the built root filesystem, when Built
}

// Store is the template cache under a data directory.
type Store struct{ dir string }

// NewStore returns the template cache kept under dataDir.
func NewStore(dataDir string) *Store { return &Store{dir: dataDir} }

// List returns every known template, built or not.
func (s *Store) List(ctx context.Context) ([]Info, error) { return nil, errTODO }

// Ensure returns the root filesystem of template name, building it first if
// it is not built yet; build progress goes to progress. Concurrent calls for
// one template build it once. An unknown name is an error naming the known
// ones.
func (s *Store) Ensure(ctx context.Context, name string, progress io.Writer) (string, error) {
	return "", errTODO
}

// Build (re)builds template name, replacing the cached one only when the
// new build succeeded.
func (s *Store) Build(ctx context.Context, name string, progress io.Writer) (string, error) {
	return "", errTODO
}
