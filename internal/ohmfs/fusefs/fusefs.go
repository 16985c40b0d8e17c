// Package fusefs serves an ohmfs volume to the kernel through FUSE
// (hanwen/go-fuse v2, raw API): a thin adapter over package vfs.
package fusefs

import (
	_ "github.com/hanwen/go-fuse/v2/fuse"
	_ "golang.org/x/sys/unix"
)
