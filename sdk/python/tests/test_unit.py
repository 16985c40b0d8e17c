"""Tests of the SDK that need no daemon: its coverage of the OpenAPI
document, error mapping, the WebSocket client and safe extraction."""

import asyncio
import http.server
import io
import json
import os
import socket
import socketserver
import struct
import tarfile
import tempfile
import threading
import unittest
import urllib.parse

import ohm
from ohm import _websocket as ws
from ohm.errors import _BY_CODE
from ohm.models import parse_time
from ohm.operations import OPERATIONS

HERE = os.path.dirname(os.path.abspath(__file__))
OPENAPI = os.environ.get("OHM_OPENAPI") or os.path.join(HERE, "..", "..", "..", "internal", "api", "openapi.json")


def load_openapi():
    with open(OPENAPI, encoding="utf-8") as f:
        return json.load(f)


class CoverageTest(unittest.TestCase):
    """The SDK covers every operation of the daemon's API."""

    def test_every_operation_has_a_method(self):
        doc = load_openapi()
        # x-ohm-sdk: false marks what SDKs leave to other clients (MCP).
        ids = sorted(op["operationId"] for path in doc["paths"].values() for op in path.values() if op.get("x-ohm-sdk", True))
        missing = [i for i in ids if i not in OPERATIONS]
        self.assertEqual(missing, [], "operations of openapi.json the Python SDK lacks: add them (see ohm/operations.py)")
        stale = sorted(set(OPERATIONS) - set(ids))
        self.assertEqual(stale, [], "ohm/operations.py lists operations openapi.json does not have")
        for op, target in OPERATIONS.items():
            cls, meth = target.split(".")
            self.assertTrue(callable(getattr(getattr(ohm.client, cls), meth, None)), "%s: %s does not exist" % (op, target))
            acls = getattr(ohm.aio, "Async" + cls, None) or getattr(ohm.aio, "Async" + cls.rstrip("s") + "s", None)
            self.assertIsNotNone(acls, "%s: no Async%s" % (op, cls))
            self.assertTrue(callable(getattr(acls, meth, None)), "%s: Async%s.%s does not exist" % (op, cls, meth))

    def test_only_mcp_is_left_out(self):
        # The SDKs leave out exactly the MCP transport's operations: an
        # operation marked x-ohm-sdk: false elsewhere would go uncovered.
        doc = load_openapi()
        marked, mcp = [], []
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                if not isinstance(op, dict) or "operationId" not in op:
                    continue
                if "x-ohm-sdk" in op:
                    self.assertIs(op["x-ohm-sdk"], False, "%s %s: x-ohm-sdk is only ever false" % (method, path))
                    marked.append("%s %s" % (method, path))
                if path == "/mcp" or path.startswith("/mcp/"):
                    mcp.append("%s %s" % (method, path))
        self.assertNotEqual(mcp, [], "openapi.json has no /mcp operations")
        self.assertEqual(sorted(marked), sorted(mcp), "x-ohm-sdk: false must mark exactly the /mcp operations")

    def test_every_error_code_has_a_class(self):
        doc = load_openapi()
        codes = doc["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"]
        for code in codes:
            self.assertIn(code, _BY_CODE, "error code %s has no class in ohm/errors.py" % code)
            self.assertEqual(_BY_CODE[code].code, code)


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    answers = {}
    seen = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Authorization")))
        status, body = self.answers.get(self.path.split("?")[0], (404, {"error": {"code": "not_found", "message": "no"}}))
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def address_string(self):
        return "unix"


class _FakeDaemonTest(unittest.TestCase):
    """A test case with a fake daemon (its class's handler) serving HTTP
    on a Unix socket, cls.sock, for the class's tests."""

    handler = None

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp()
        cls.sock = os.path.join(cls.dir, "ohm.sock")
        cls.srv = _UnixHTTPServer(cls.sock, cls.handler)
        threading.Thread(target=cls.srv.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.shutdown()
        cls.srv.server_close()
        os.unlink(cls.sock)
        os.rmdir(cls.dir)


class ErrorMappingTest(_FakeDaemonTest):
    """Each error code of the daemon comes out as its class, with the
    daemon's message, over a Unix socket."""

    handler = _Handler

    def test_codes(self):
        cases = {
            "invalid_argument": (400, ohm.BadRequest),
            "unauthenticated": (401, ohm.Unauthorized),
            "not_found": (404, ohm.NotFound),
            "already_exists": (409, ohm.AlreadyExists),
            "failed_precondition": (409, ohm.WrongState),
            "too_large": (413, ohm.TooLarge),
            "internal": (500, ohm.InternalError),
            "unavailable": (503, ohm.ComputerUnreachable),
        }
        c = ohm.Ohm(socket=self.sock)
        for code, (status, cls) in cases.items():
            _Handler.answers["/v1/computers/x"] = (status, {"error": {"code": code, "message": "it is %s" % code}})
            with self.assertRaises(cls) as cm:
                c.computers.get("x")
            self.assertEqual(str(cm.exception), "it is %s" % code)
            self.assertEqual(cm.exception.code, code)
            self.assertEqual(cm.exception.status, status)
        self.assertTrue(issubclass(ohm.AlreadyExists, ohm.Conflict) and issubclass(ohm.WrongState, ohm.Conflict))

    def test_not_json(self):
        _Handler.answers["/v1/computers/y"] = (502, b"bad gateway")
        with self.assertRaises(ohm.OhmError) as cm:
            ohm.Ohm(socket=self.sock).computers.get("y")
        self.assertIn("502", str(cm.exception))

    def test_no_daemon(self):
        with self.assertRaises(ohm.DaemonUnreachable) as cm:
            ohm.Ohm(socket=os.path.join(self.dir, "missing.sock")).health()
        self.assertIn("missing.sock", str(cm.exception))
        self.assertIsInstance(cm.exception, ConnectionError)

    def test_environment(self):
        env = dict(os.environ)
        try:
            os.environ["OHM_URL"] = "unix://" + self.sock
            _Handler.answers["/healthz"] = (200, {"status": "ok"})
            ohm.Ohm().health()
            os.environ["OHM_URL"] = "http://127.0.0.1:1"
            os.environ["OHM_TOKEN"] = "t0k"
            c = ohm.Ohm()
            self.assertEqual(c._t.auth_headers(), {"Authorization": "Bearer t0k"})
            with self.assertRaises(ohm.DaemonUnreachable):
                c.health()
            del os.environ["OHM_URL"]
            os.environ["OHM_DATA_DIR"] = "/srv/ohm"
            self.assertEqual(ohm.Ohm()._t.socket_path, "/srv/ohm/ohm.sock")
        finally:
            os.environ.clear()
            os.environ.update(env)
        with self.assertRaises(ValueError):
            ohm.Ohm(url="ftp://x")


class _WatchHandler(http.server.BaseHTTPRequestHandler):
    """A daemon's watch stream, one kind per computer name: live (held
    open until the client goes), ended, cut (no ended event), odd (no
    watching event first), failed (an error event), bad (a 400)."""

    protocol_version = "HTTP/1.0"  # the body ends when the connection does
    gone = None  # threading.Event: the live stream's client went away

    def log_message(self, *args):
        pass

    def address_string(self):
        return "unix"

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        name = u.path.split("/")[3]
        path = urllib.parse.parse_qs(u.query).get("path", ["/home/ohm"])[0]
        if name == "bad":
            body = json.dumps({"error": {"code": "invalid_argument", "message": "path outside /home/ohm"}}).encode()
            self.send_response(400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()

        def line(ev):
            self.wfile.write(json.dumps(ev).encode() + b"\n")
            self.wfile.flush()

        if name != "odd":
            line({"type": "watching", "path": path, "dir": True})
        line({"type": "created", "path": path + "/a", "dir": True})
        if name == "failed":
            line({"error": {"code": "internal", "message": "the feed broke"}})
        elif name == "ended":
            line({"type": "moved", "path": path + "/b", "old_path": path + "/a/b"})
            line({"type": "overflow", "path": path, "dropped": 7, "reason": "the reader fell behind"})
            line({"type": "ended", "reason": "the computer stopped: stopped on request"})
        elif name == "live":
            self.rfile.read()  # until the client goes
            self.gone.set()


class WatchTest(_FakeDaemonTest):
    """Watch streams parsed, ended, cut and closed, against a fake daemon."""

    handler = _WatchHandler

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ohm = ohm.Ohm(socket=cls.sock)

    def test_events(self):
        with self.ohm.computer("ended").watch("/home/ohm/src") as w:
            self.assertEqual(w.path, "/home/ohm/src")
            evs = list(w)
        self.assertEqual(evs, [
            ohm.WatchEvent("created", "/home/ohm/src/a", dir=True),
            ohm.WatchEvent("moved", "/home/ohm/src/b", old_path="/home/ohm/src/a/b"),
            ohm.WatchEvent("overflow", "/home/ohm/src", dropped=7, reason="the reader fell behind"),
            ohm.WatchEvent("ended", reason="the computer stopped: stopped on request"),
        ])
        self.assertEqual(w.reason, "the computer stopped: stopped on request")

    def test_broken_streams(self):
        with self.assertRaises(ohm.BadRequest):
            self.ohm.computer("bad").watch("/etc")
        with self.assertRaises(ohm.OhmError) as cm:
            self.ohm.computer("odd").watch()
        self.assertIn("watching", str(cm.exception))
        with self.ohm.computer("cut").watch() as w:
            self.assertEqual(next(w).type, "created")
            with self.assertRaises(ohm.OhmError) as cm:
                next(w)
            self.assertIn("without an ended event", str(cm.exception))
        with self.ohm.computer("failed").watch() as w:
            self.assertEqual(next(w).type, "created")
            with self.assertRaises(ohm.InternalError):
                next(w)

    def test_close_from_another_thread(self):
        _WatchHandler.gone = threading.Event()
        w = self.ohm.computer("live").watch()
        self.assertEqual(next(w).type, "created")
        rest = []
        reader = threading.Thread(target=lambda: rest.extend(w))
        reader.start()
        w.close()  # while the reader waits for the next event, or before
        reader.join(10)
        self.assertFalse(reader.is_alive(), "close did not end a loop over the watch")
        self.assertEqual(rest, [])
        self.assertTrue(_WatchHandler.gone.wait(10), "the daemon did not see the watch end")

    def test_async(self):
        async def scenario():
            _WatchHandler.gone = threading.Event()
            async with ohm.AsyncOhm(socket=self.sock) as a:
                async with await a.computer("ended").watch() as w:
                    self.assertEqual(w.path, "/home/ohm")
                    types = [ev.type async for ev in w]
                self.assertEqual(types, ["created", "moved", "overflow", "ended"])
                self.assertEqual(w.reason, "the computer stopped: stopped on request")
                w = await a.computer("live").watch()
                self.assertEqual((await w.__anext__()).type, "created")
                # Cancelling a wait for the next event ends the watch.
                with self.assertRaises(asyncio.TimeoutError):
                    await asyncio.wait_for(w.__anext__(), 0.2)
                self.assertTrue(await asyncio.get_running_loop().run_in_executor(None, _WatchHandler.gone.wait, 10))
                with self.assertRaises(ohm.BadRequest):
                    await a.computer("bad").watch("/etc")

        asyncio.run(scenario())


def _server_frame(opcode, payload, fin=True, masked=False, rsv=0):
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    m = 0x80 if masked else 0
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if masked:
        return head + b"abcd" + ws.mask(payload, b"abcd")
    return head + payload


def _read_client_frame(sock):
    def exactly(n):
        b = b""
        while len(b) < n:
            c = sock.recv(n - len(b))
            if not c:
                raise EOFError
            b += c
        return b

    b0, b1 = exactly(2)
    assert b1 & 0x80, "client frames must be masked"
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", exactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", exactly(8))
    key = exactly(4)
    return b0 & 0x80 != 0, b0 & 0x0F, ws.mask(exactly(n), key)


class WebSocketTest(unittest.TestCase):
    """The RFC 6455 client against a server written from the RFC here."""

    def pair(self, answer_key=True, extra=b""):
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        result = {}

        def serve():
            req = b""
            while b"\r\n\r\n" not in req:
                req += b.recv(4096)
            lines = req.decode().split("\r\n")
            hdrs = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
            result["headers"] = hdrs
            key = ws.accept_key(hdrs["sec-websocket-key"]) if answer_key else "wrong"
            b.sendall(
                ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\n\r\n" % key).encode() + extra
            )

        t = threading.Thread(target=serve)
        t.start()
        return a, b, t, result

    def test_accept_key(self):
        # The example of RFC 6455 section 1.3.
        self.assertEqual(ws.accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")

    def test_handshake_checks_accept(self):
        a, b, t, _ = self.pair(answer_key=False)
        with self.assertRaises(ws.ProtocolError):
            ws.WebSocket.handshake(a, "ohm", "/x", {})
        t.join()

    def test_messages(self):
        first = _server_frame(ws.OP_TEXT, b"early")  # arrives with the handshake answer
        a, b, t, seen = self.pair(extra=first)
        conn = ws.WebSocket.handshake(a, "ohm", "/v1/computers/x/exec", {"Authorization": "Bearer t"})
        t.join()
        self.assertEqual(seen["headers"]["sec-websocket-version"], "13")
        self.assertEqual(seen["headers"]["authorization"], "Bearer t")
        self.assertEqual(conn.recv(), (ws.OP_TEXT, b"early"))
        # Lengths around the 7-, 16- and 64-bit encodings, client to server.
        for n in (0, 125, 126, 65535, 65536, 200000):
            payload = os.urandom(n)
            conn.send_binary(payload)
            fin, op, got = _read_client_frame(b)
            self.assertEqual((fin, op, got), (True, ws.OP_BINARY, payload), n)
        # A fragmented message with a ping in the middle.
        b.sendall(_server_frame(ws.OP_BINARY, b"\x01he", fin=False))
        b.sendall(_server_frame(ws.OP_PING, b"p1"))
        b.sendall(_server_frame(ws.OP_CONT, b"ll", fin=False))
        b.sendall(_server_frame(ws.OP_CONT, b"o" * 70000))
        self.assertEqual(conn.recv(), (ws.OP_BINARY, b"\x01hell" + b"o" * 70000))
        self.assertEqual(_read_client_frame(b), (True, ws.OP_PONG, b"p1"))
        # Close: answered, then recv ends.
        b.sendall(_server_frame(ws.OP_CLOSE, struct.pack("!H", 1000) + b"bye"))
        self.assertIsNone(conn.recv())
        self.assertEqual(conn.close_code, 1000)
        self.assertEqual(_read_client_frame(b)[1], ws.OP_CLOSE)

    def test_protocol_errors(self):
        for frame in (
            _server_frame(ws.OP_TEXT, b"x", masked=True),
            _server_frame(ws.OP_TEXT, b"x", rsv=0x40),
            _server_frame(ws.OP_CONT, b"x"),
            _server_frame(ws.OP_PING, b"x", fin=False),
            _server_frame(ws.OP_TEXT, b"\xff\xfe"),
            _server_frame(0x3, b"x"),
        ):
            a, b, t, _ = self.pair(extra=frame)
            conn = ws.WebSocket.handshake(a, "ohm", "/", {})
            t.join()
            with self.assertRaises(ws.ProtocolError, msg=repr(frame)):
                conn.recv()

    def test_refused(self):
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        body = b'{"error":{"code":"not_found","message":"computer \\"x\\" does not exist"}}'
        b.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        with self.assertRaises(ws.HandshakeRefused) as cm:
            ws.WebSocket.handshake(a, "ohm", "/", {})
        self.assertEqual(cm.exception.status, 404)
        self.assertEqual(cm.exception.body, body)


def _read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def _tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, data in entries:
            ti = tarfile.TarInfo(name)
            if kind == "file":
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = data
                tf.addfile(ti)
            elif kind == "hardlink":
                ti.type = tarfile.LNKTYPE
                ti.linkname = data
                tf.addfile(ti)
    buf.seek(0)
    return buf


class ExtractTest(unittest.TestCase):
    """What a computer sends as a directory cannot write outside the
    destination on the host."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.dest = os.path.join(self.tmp, "dest")
        self.outside = os.path.join(self.tmp, "outside")
        os.mkdir(self.outside)
        self.addCleanup(lambda: __import__("shutil").rmtree(self.tmp))

    def test_normal_tree(self):
        ohm.client._extract(_tar([("d", "dir", None), ("d/a", "file", b"A"), ("l", "symlink", "d/a")]), self.dest)
        self.assertEqual(_read(os.path.join(self.dest, "d", "a"), "rb"), b"A")
        self.assertEqual(os.readlink(os.path.join(self.dest, "l")), "d/a")

    def test_escapes_refused(self):
        for entries in (
            [("../escaped", "file", b"x")],
            [("/abs", "file", b"x")],
            [("a/../../escaped", "file", b"x")],
            [("link", "symlink", self.outside), ("link/planted", "file", b"x")],
            [("link", "symlink", self.outside), ("link", "dir", None)],
        ):
            with self.assertRaises(ohm.OhmError, msg=repr(entries)):
                ohm.client._extract(_tar(entries), self.dest)
            self.assertEqual(os.listdir(self.outside), [], repr(entries))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "escaped")))

    def test_symlink_replaced_not_followed(self):
        target = os.path.join(self.outside, "victim")
        with open(target, "w") as f:
            f.write("keep")
        ohm.client._extract(_tar([("f", "symlink", target), ("f", "file", b"new")]), self.dest)
        self.assertEqual(_read(target), "keep")
        self.assertEqual(_read(os.path.join(self.dest, "f")), "new")

    def test_hardlinks_skipped(self):
        ohm.client._extract(_tar([("h", "hardlink", "/etc/passwd")]), self.dest)
        self.assertFalse(os.path.lexists(os.path.join(self.dest, "h")))


class TimeTest(unittest.TestCase):
    def test_parse(self):
        t = parse_time("2025-01-02T03:04:05.123456789Z")
        self.assertEqual((t.year, t.second, t.microsecond, t.utcoffset().total_seconds()), (2025, 5, 123456, 0))
        self.assertEqual(parse_time("2025-01-02T03:04:05+02:00").utcoffset().total_seconds(), 7200)
        self.assertIsNone(parse_time("0001-01-01T00:00:00Z"))


if __name__ == "__main__":
    unittest.main()
