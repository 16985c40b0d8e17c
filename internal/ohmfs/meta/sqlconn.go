package meta

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"sync"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// conn is one SQLite connection used through the driver directly. The
// database/sql layer costs a context watcher, locks and conversions on every
// statement; the metadata engine runs a handful of statements per file
// operation on a single connection it owns, so it skips that layer.
//
// Statements never get the caller's context: the driver interrupts SQLite
// when a context ends, and an interrupted write inside the long-lived
// transaction would roll back the whole uncommitted tail.
type conn struct {
	c     driver.Conn
	stmts map[string]*stmt
	args  []driver.NamedValue // reused argument buffer; conn is used under DB.mu
}

type stmt struct {
	sql string
	s   driver.Stmt
	ex  driver.StmtExecContext
	qu  driver.StmtQueryContext
}

var (
	sqliteDriverOnce sync.Once
	sqliteDriver     driver.Driver
)

// openConn opens a connection to dsn through the driver registered as
// "sqlite" by modernc.org/sqlite.
func openConn(dsn string) (*conn, error) {
	sqliteDriverOnce.Do(func() {
		// sql.Open only looks the driver up; it opens nothing.
		db, err := sql.Open("sqlite", "")
		if err == nil {
			sqliteDriver = db.Driver()
			db.Close()
		}
	})
	if sqliteDriver == nil {
		return nil, errors.New("sqlite driver not registered")
	}
	c, err := sqliteDriver.Open(dsn)
	if err != nil {
		return nil, err
	}
	return &conn{c: c, stmts: make(map[string]*stmt)}, nil
}

func (c *conn) close() error {
	var first error
	for _, s := range c.stmts {
		if err := s.s.Close(); err != nil && first == nil {
			first = err
		}
	}
	c.stmts = nil
	if err := c.c.Close(); err != nil && first == nil {
		first = err
	}
	return first
}

// prepare returns the prepared statement for query, preparing it once.
func (c *conn) prepare(query string) (*stmt, error) {
	if s, ok := c.stmts[query]; ok {
		return s, nil
	}
	ds, err := c.c.(driver.ConnPrepareContext).PrepareContext(context.Background(), query)
	if err != nil {
		return nil, fmt.Errorf("prepare %q: %w", query, err)
	}
	s := &stmt{sql: query, s: ds, ex: ds.(driver.StmtExecContext), qu: ds.(driver.StmtQueryContext)}
	c.stmts[query] = s
	return s, nil
}

func (c *conn) bind(args []any) []driver.NamedValue {
	c.args = c.args[:0]
	for i, a := range args {
		var v driver.Value
		switch a := a.(type) {
		case Ino:
			v = int64(a)
		case uint64:
			v = int64(a)
		case uint32:
			v = int64(a)
		case int:
			v = int64(a)
		default:
			v = a
		}
		c.args = append(c.args, driver.NamedValue{Ordinal: i + 1, Value: v})
	}
	return c.args
}

// exec runs query and returns the number of rows it changed.
func (c *conn) exec(query string, args ...any) (int64, error) {
	s, err := c.prepare(query)
	if err != nil {
		return 0, err
	}
	r, err := s.ex.ExecContext(context.Background(), c.bind(args))
	if err != nil {
		return 0, err
	}
	return r.RowsAffected()
}

// execScript runs statements that take no arguments without keeping them
// prepared (schema, pragmas).
func (c *conn) execScript(query string) error {
	_, err := c.c.(driver.ExecerContext).ExecContext(context.Background(), query, nil)
	return err
}

// rows iterates the result of a query.
type rows struct {
	r   driver.Rows
	row []driver.Value
}

func (c *conn) query(query string, args ...any) (*rows, error) {
	s, err := c.prepare(query)
	if err != nil {
		return nil, err
	}
	r, err := s.qu.QueryContext(context.Background(), c.bind(args))
	if err != nil {
		return nil, err
	}
	return &rows{r: r, row: make([]driver.Value, len(r.Columns()))}, nil
}

// next advances to the next row; it returns false at the end or on error.
func (r *rows) next() (bool, error) {
	err := r.r.Next(r.row)
	if err == io.EOF {
		return false, nil
	}
	return err == nil, err
}

func (r *rows) close() error { return r.r.Close() }

// queryRow runs query and copies its first row into dest (pointers to
// int64, uint64, uint32, Ino, string, []byte). It reports whether there was
// a row.
func (c *conn) queryRow(query string, args []any, dest ...any) (bool, error) {
	r, err := c.query(query, args...)
	if err != nil {
		return false, err
	}
	ok, err := r.next()
	if ok {
		err = scanRow(r.row, dest)
	}
	if cerr := r.close(); err == nil {
		err = cerr
	}
	return ok && err == nil, err
}

func scanRow(row []driver.Value, dest []any) error {
	for i, d := range dest {
		v := row[i]
		switch d := d.(type) {
		case *int64:
			*d = asInt(v)
		case *uint64:
			*d = uint64(asInt(v))
		case *uint32:
			*d = uint32(asInt(v))
		case *Ino:
			*d = Ino(asInt(v))
		case *string:
			switch v := v.(type) {
			case string:
				*d = v
			case []byte:
				*d = string(v)
			default:
				*d = ""
			}
		case *[]byte:
			switch v := v.(type) {
			case []byte:
				*d = v
			case string:
				*d = []byte(v)
			default:
				*d = nil
			}
		case nil:
		default:
			return fmt.Errorf("scan: unsupported destination %T", d)
		}
	}
	return nil
}

func asInt(v driver.Value) int64 {
	switch v := v.(type) {
	case int64:
		return v
	case float64:
		return int64(v)
	case bool:
		if v {
			return 1
		}
	}
	return 0
}

// isConstraint reports whether err is a uniqueness or primary key violation.
func isConstraint(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()&0xff == sqlite3.SQLITE_CONSTRAINT
	}
	return false
}
