package meta

import (
	"strings"
	"testing"
)

func TestCheckFindsCorruption(t *testing.T) {
	tests := []struct {
		name   string
		inject string
		want   string // a substring of some problem's Detail
	}{
		{"entry to missing inode", "INSERT INTO dentries VALUES (1, 'ghost', 777, 1000)", "missing inode"},
		{"wrong file nlink", "UPDATE inodes SET nlink = 5 WHERE ino = (SELECT ino FROM dentries WHERE name = 'f')", "nlink is 5"},
		{"wrong dir nlink", "UPDATE inodes SET nlink = 7 WHERE ino = 1", "directory nlink is 7"},
		{"inode counter", "UPDATE counters SET value = value + 1 WHERE name = 'inodes'", "inode counter"},
		{"used counter", "UPDATE counters SET value = 12345 WHERE name = 'used_bytes'", "used bytes counter"},
		{"next ino", "UPDATE counters SET value = 2 WHERE name = 'next_ino'", "next inode number"},
		{"next cookie", "UPDATE counters SET value = 3 WHERE name = 'next_cookie'", "next cookie"},
		{"used vs chunks", "UPDATE inodes SET used = 1 WHERE ino = (SELECT ino FROM dentries WHERE name = 'f')", "chunks hold"},
		{"chunk past eof", "UPDATE inodes SET size = 1 WHERE ino = (SELECT ino FROM dentries WHERE name = 'f')", "past the end"},
		{"chunk uses more than its length", "UPDATE chunks SET used = len + 1", "only 100 long"},
		{"chunk of missing inode", "INSERT INTO chunks VALUES (888, 0, 1, 0, x'00', 1)", "missing inode"},
		{"block beyond reservation", "UPDATE chunks SET block_id = 1000000", "reserved block ids"},
		{"directory loop", "UPDATE dentries SET parent = (SELECT ino FROM dentries WHERE name = 'sub') WHERE name = 'd'", "not reachable"},
		{"entry in a file", "INSERT INTO dentries SELECT ino, 'x', ino, 5000 FROM dentries WHERE name = 'f'", "non-directory"},
		{"bad cookie", "UPDATE dentries SET cookie = 1 WHERE name = 'f'", "cookie 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, path := newTestDB(t)
			f := mkfile(t, db, RootIno, "f")
			d := mkdir(t, db, RootIno, "d")
			mkdir(t, db, d.Ino, "sub")
			id, _ := db.NewBlockID(ctx)
			if _, err := db.UpdateFile(ctx, f.Ino, FileUpdate{Chunks: []Chunk{{Index: 0, Len: 100, BlockID: id}}, Size: 100}); err != nil {
				t.Fatal(err)
			}
			checkClean(t, db)
			if err := db.Close(ctx); err != nil {
				t.Fatal(err)
			}
			c, err := openConn(path, false)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.execScript(tt.inject); err != nil {
				t.Fatal(err)
			}
			c.close()
			for _, ro := range []bool{true, false} {
				db, err := Open(ctx, path, Options{ReadOnly: ro})
				if err != nil {
					t.Fatal(err)
				}
				probs, err := db.Check(ctx)
				db.Close(ctx)
				if err != nil {
					t.Fatal(err)
				}
				found := false
				for _, p := range probs {
					if strings.Contains(p.Detail, tt.want) {
						found = true
					}
				}
				if !found {
					t.Errorf("read-only %v: problems %+v, want one with %q", ro, probs, tt.want)
				}
			}
		})
	}
}
