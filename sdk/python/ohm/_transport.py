"""HTTP to the Ohm daemon over its Unix socket or TCP, standard library only."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import threading
import urllib.parse
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

from .errors import DaemonUnreachable, OhmError, error_for

#: Where the daemon listens when nothing says otherwise (``ohm serve``
#: without --data-dir): ``$OHM_DATA_DIR/ohm.sock``, else this.
DEFAULT_SOCKET = "/var/lib/ohm/ohm.sock"

# Bounds on what is read into memory from one answer line or error body.
_MAX_LINE = 16 << 20
_MAX_ERROR_BODY = 1 << 20


class Canceller:
    """Cuts the connections of a call running in another thread (the async
    client's way to cancel a blocking call at any point, even while it
    waits for the daemon's first byte)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._socks = []
        self.cancelled = False

    def register(self, sock) -> None:
        with self._lock:
            self._socks.append(sock)
            cancelled = self.cancelled
        if cancelled:
            _shutdown(sock)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            socks = list(self._socks)
        for s in socks:
            _shutdown(s)


def _shutdown(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


_local = threading.local()


def current_canceller() -> Optional[Canceller]:
    """The Canceller of the call this thread runs, if any."""
    return getattr(_local, "canceller", None)


def set_canceller(c: Optional[Canceller]) -> None:
    _local.canceller = c


def default_socket() -> str:
    """The socket of the local daemon: ``$OHM_DATA_DIR/ohm.sock`` or
    :data:`DEFAULT_SOCKET`."""
    d = os.environ.get("OHM_DATA_DIR")
    return os.path.join(d, "ohm.sock") if d else DEFAULT_SOCKET


class _Response(http.client.HTTPResponse):
    """An HTTP response that keeps its trailers: the daemon reports a
    directory download that failed midway in the ``Ohm-Error`` trailer.
    (http.client reads trailers in this one method and drops them.)"""

    trailers: Optional[Dict[str, str]] = None

    def _read_and_discard_trailer(self):  # noqa: D401 - overrides http.client
        trailers: Dict[str, str] = {}
        while True:
            line = self.fp.readline(65537)
            if not line or line in (b"\r\n", b"\n"):
                break
            k, _, v = line.decode("latin-1").partition(":")
            trailers[k.strip().lower()] = v.strip()
        self.trailers = trailers


class _UnixConnection(http.client.HTTPConnection):
    response_class = _Response

    def __init__(self, path: str, timeout: Optional[float]):
        super().__init__("ohm", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self._path)
        except BaseException:
            s.close()
            raise
        self.sock = s


class _TCPConnection(http.client.HTTPConnection):
    response_class = _Response


class _TLSConnection(http.client.HTTPSConnection):
    response_class = _Response


class Response:
    """An answer of the daemon whose body has not been read yet."""

    def __init__(self, conn: http.client.HTTPConnection, resp: _Response, sock: Optional[socket.socket]):
        self._conn = conn
        self._resp = resp
        # The connection's socket, as it was before getresponse: http.client
        # drops it from conn when the answer ends with the connection (no
        # length, no chunks), and close must still cut a read blocked on it
        # in another thread.
        self._sock = sock
        self.status = resp.status
        self.headers = resp.headers
        self._lock = threading.Lock()
        self._closed = False

    def read(self, n: int = -1) -> bytes:
        return self._resp.read(n) if n >= 0 else self._resp.read()

    def readinto(self, b) -> int:
        return self._resp.readinto(b)

    def json(self) -> Any:
        try:
            return json.loads(self.read())
        finally:
            self.close()

    def lines(self) -> Iterator[Dict[str, Any]]:
        """The NDJSON events of the answer; an error event raises its typed
        error."""
        while True:
            line = self._resp.readline(_MAX_LINE)
            if not line:
                return
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError as e:
                raise OhmError("bad event from the daemon: %s" % e) from None
            err = ev.get("error")
            if err:
                raise error_for(err.get("code"), err.get("message") or "the daemon reported an error")
            yield ev

    def trailer(self, name: str) -> Optional[str]:
        t = self._resp.trailers or {}
        return t.get(name.lower())

    def close(self) -> None:
        """Ends the answer, cutting the connection (which kills a command
        that is not in the background). Safe from any thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._resp.close()
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Transport:
    """Where the daemon is and how to reach it.

    ``url`` is ``http://HOST:PORT``, ``https://HOST:PORT`` (TCP, with
    ``token`` as the bearer token) or ``unix:///path/to/ohm.sock``; without
    it, ``$OHM_URL`` and ``$OHM_TOKEN``, else the local daemon's socket.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        socket_path: Optional[str] = None,
        timeout: Optional[float] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
    ):
        if url is None and socket_path is None:
            url = os.environ.get("OHM_URL") or None
        if token is None:
            token = os.environ.get("OHM_TOKEN") or None
        self.token = token
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.socket_path: Optional[str] = None
        self.host: Optional[str] = None
        self.port: Optional[int] = None
        self.tls = False
        if socket_path is not None:
            self.socket_path = socket_path
        elif url is None:
            self.socket_path = default_socket()
        else:
            u = urllib.parse.urlsplit(url)
            if u.scheme == "unix":
                self.socket_path = u.path
            elif u.scheme in ("http", "https") and u.hostname:
                self.tls = u.scheme == "https"
                self.host = u.hostname
                self.port = u.port or (443 if self.tls else 80)
            else:
                raise ValueError("invalid daemon URL %r: want http://HOST:PORT, https://HOST:PORT or unix:///PATH" % url)
        self.where = self.socket_path or "%s:%d" % (self.host, self.port)

    # -- connections

    def _connection(self) -> http.client.HTTPConnection:
        if self.socket_path is not None:
            return _UnixConnection(self.socket_path, self.timeout)
        if self.tls:
            ctx = self.ssl_context or ssl.create_default_context()
            return _TLSConnection(self.host, self.port, timeout=self.timeout, context=ctx)
        return _TCPConnection(self.host, self.port, timeout=self.timeout)

    def _unreachable(self, err: OSError) -> DaemonUnreachable:
        hint = ""
        if self.socket_path is not None:
            if isinstance(err, PermissionError):
                hint = " (the socket is root-only: run as root, or use TCP with a token)"
            elif isinstance(err, (FileNotFoundError, ConnectionRefusedError)):
                hint = " (start one with `ohm serve`, or point OHM_URL at one)"
        return DaemonUnreachable("no ohm daemon answers at %s: %s%s" % (self.where, err.strerror or err, hint))

    def auth_headers(self) -> Dict[str, str]:
        return {"Authorization": "Bearer " + self.token} if self.token and self.socket_path is None else {}

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Mapping[str, Any]] = None,
        json_body: Any = None,
        body: Any = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Response:
        """Sends a request and returns the answer once its headers are in;
        an error answer raises its typed error."""
        url = path
        if query:
            q = {k: v for k, v in query.items() if v is not None}
            if q:
                url += "?" + urllib.parse.urlencode(q)
        h = dict(self.auth_headers())
        if headers:
            h.update(headers)
        if json_body is not None:
            body = json.dumps(json_body).encode()
            h["Content-Type"] = "application/json"
        conn = self._connection()
        sock = None
        try:
            conn.connect()
            sock = conn.sock
            c = current_canceller()
            if c is not None:
                c.register(conn.sock)
            conn.request(method, url, body=body, headers=h)
            resp = conn.getresponse()
        except OSError as e:
            conn.close()
            if isinstance(e, (ConnectionError, FileNotFoundError, PermissionError, socket.gaierror)) or not conn.sock:
                raise self._unreachable(e) from None
            raise
        except BaseException:
            conn.close()
            raise
        r = Response(conn, resp, sock)
        if resp.status >= 300:
            try:
                raise decode_error(resp.status, resp.read(_MAX_ERROR_BODY))
            finally:
                r.close()
        return r

    def socket_for_upgrade(self) -> socket.socket:
        """A connected socket for a WebSocket upgrade."""
        try:
            if self.socket_path is not None:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.settimeout(self.timeout)
                    s.connect(self.socket_path)
                except BaseException:
                    s.close()
                    raise
                s.settimeout(None)
                c = current_canceller()
                if c is not None:
                    c.register(s)
                return s
            s = socket.create_connection((self.host, self.port), timeout=self.timeout)
            s.settimeout(None)
            c = current_canceller()
            if c is not None:
                c.register(s)
            if self.tls:
                ctx = self.ssl_context or ssl.create_default_context()
                s = ctx.wrap_socket(s, server_hostname=self.host)
            return s
        except OSError as e:
            if isinstance(e, (ConnectionError, FileNotFoundError, PermissionError, socket.gaierror)):
                raise self._unreachable(e) from None
            raise

    def host_header(self) -> str:
        if self.socket_path is not None:
            return "ohm"
        default = 443 if self.tls else 80
        host = self.host if ":" not in (self.host or "") else "[%s]" % self.host
        return host if self.port == default else "%s:%d" % (host, self.port)


def decode_error(status: int, body: bytes) -> OhmError:
    """The typed error of an error answer."""
    try:
        err = json.loads(body)["error"]
        if err.get("message"):
            return error_for(err.get("code"), err["message"], status)
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    text = body.decode("utf-8", "replace").strip()
    return error_for(None, "the daemon answered %d: %s" % (status, text or http.client.responses.get(status, "")), status)


def event_data(ev: Mapping[str, Any]) -> bytes:
    """The output bytes of an exec event (``data`` or ``data_b64``)."""
    if "data_b64" in ev:
        return base64.b64decode(ev["data_b64"])
    return (ev.get("data") or "").encode("utf-8")


def split_command(command) -> Tuple[Optional[str], Optional[list]]:
    """A shell command string runs through the computer's shell; a list of
    strings runs as is."""
    if command is None:
        return None, None
    if isinstance(command, str):
        return command, None
    argv = list(command)
    if not all(isinstance(a, str) for a in argv):
        raise TypeError("a command is a string (run by the shell) or a list of strings (run as is)")
    return None, argv
