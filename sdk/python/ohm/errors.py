"""Typed errors of the Ohm SDK.

Every error the daemon answers becomes an instance of the class of its code
(see ``ErrorBody.code`` in the daemon's OpenAPI document), carrying the
daemon's one-sentence message as ``str(err)`` and ``err.message``.
"""

from __future__ import annotations

from typing import Dict, Optional, Type


class OhmError(Exception):
    """An error from the Ohm daemon, or from talking to it.

    ``code`` is the daemon's stable error code (``"not_found"``, ...),
    ``status`` the HTTP status (``None`` for an error inside a stream).
    """

    code = "unknown"

    def __init__(self, message: str, *, code: Optional[str] = None, status: Optional[int] = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.status = status


class BadRequest(OhmError):
    """Bad input: a name, a size, a path, an option (``invalid_argument``, 400)."""

    code = "invalid_argument"


class Unauthorized(OhmError):
    """A missing or wrong bearer token on TCP (``unauthenticated``, 401)."""

    code = "unauthenticated"


class NotFound(OhmError):
    """No such computer, file or background process (``not_found``, 404)."""

    code = "not_found"


class Conflict(OhmError):
    """The request conflicts with the computer's state or name (409)."""

    code = "failed_precondition"


class AlreadyExists(Conflict):
    """A computer with that name exists (``already_exists``, 409)."""

    code = "already_exists"


class WrongState(Conflict):
    """The computer is in the wrong state, e.g. start of a running one
    (``failed_precondition``, 409)."""

    code = "failed_precondition"


class TooLarge(OhmError):
    """A request body over the daemon's limit (``too_large``, 413)."""

    code = "too_large"


class ComputerUnreachable(OhmError):
    """The computer does not answer: its sandbox is gone. Stop and start it
    (``unavailable``, 503)."""

    code = "unavailable"


class InternalError(OhmError):
    """Something failed inside the daemon (``internal``, 500)."""

    code = "internal"


class DaemonUnreachable(OhmError, ConnectionError):
    """No Ohm daemon answers where the client was pointed."""

    code = "daemon_unreachable"


class CommandFailed(OhmError):
    """A command exited non-zero and the caller asked ``check=True``.

    ``result`` is the :class:`ohm.CommandResult`, with its output.
    """

    code = "command_failed"

    def __init__(self, result):
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        msg = "command exited with code %d" % result.exit_code
        if tail:
            msg += ": " + " / ".join(tail)
        super().__init__(msg)
        self.result = result
        self.exit_code = result.exit_code


# The class of each wire code. A code added to the daemon maps here; until
# then it arrives as the class of its HTTP status, or OhmError.
_BY_CODE: Dict[str, Type[OhmError]] = {
    "invalid_argument": BadRequest,
    "unauthenticated": Unauthorized,
    "not_found": NotFound,
    "already_exists": AlreadyExists,
    "failed_precondition": WrongState,
    "too_large": TooLarge,
    "internal": InternalError,
    "unavailable": ComputerUnreachable,
}

_BY_STATUS: Dict[int, Type[OhmError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    500: InternalError,
    503: ComputerUnreachable,
}


def error_for(code: Optional[str], message: str, status: Optional[int] = None) -> OhmError:
    """The typed error for a daemon's error answer."""
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status or 0) or OhmError
    return cls(message, code=code or cls.code, status=status)
