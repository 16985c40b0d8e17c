package computer

import (
	"errors"
	"fmt"
)

// Code classifies an Error so that the API can map it to an HTTP status.
type Code string

// The error codes. They are stable: API clients match on them.
const (
	CodeInvalid  Code = "invalid_argument"    // bad input: name, template, sizes
	CodeNotFound Code = "not_found"           // no such computer
	CodeExists   Code = "already_exists"      // a computer with that name exists
	CodeState    Code = "failed_precondition" // wrong state, e.g. start of a running computer
	CodeInternal Code = "internal"            // anything else
)

// Error is an error with a Code and a message meant for the user.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// ErrorCode returns the Code of err, or CodeInternal if it carries none.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

func invalidf(format string, args ...any) error {
	return &Error{Code: CodeInvalid, Msg: fmt.Sprintf(format, args...)}
}

func notFound(name string) error {
	return &Error{Code: CodeNotFound, Msg: fmt.Sprintf("computer %q does not exist", name)}
}

func statef(format string, args ...any) error {
	return &Error{Code: CodeState, Msg: fmt.Sprintf(format, args...)}
}
