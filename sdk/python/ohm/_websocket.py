"""A WebSocket client (RFC 6455, client side), standard library only.

Just what the daemon's interactive sessions need: the opening handshake
with its Sec-WebSocket-Accept check, masked frames from the client,
fragmented messages, ping/pong and the closing handshake. No extensions
are offered, so any RSV bit set by the server is a protocol error.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import threading
from typing import Dict, Mapping, Optional, Tuple

from .errors import OhmError

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# A message larger than this is refused (the daemon's are at most 1 MiB).
MAX_MESSAGE = 16 << 20


class ProtocolError(OhmError):
    """The server broke the WebSocket protocol."""

    code = "websocket_protocol"


class HandshakeRefused(Exception):
    """The server answered the upgrade with something other than 101."""

    def __init__(self, status: int, headers: Dict[str, str], body: bytes):
        super().__init__("upgrade refused with %d" % status)
        self.status = status
        self.headers = headers
        self.body = body


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer to key."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def mask(payload: bytes, key: bytes) -> bytes:
    """XORs payload with the 4-byte masking key (RFC 6455 section 5.3)."""
    if not payload:
        return b""
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, key: Optional[bytes] = None) -> bytes:
    """One client frame: masked with key (random if not given)."""
    if key is None:
        key = os.urandom(4)
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return head + key + mask(payload, key)


class _Reader:
    """Buffered exact reads from a socket."""

    def __init__(self, sock: socket.socket, initial: bytes = b""):
        self.sock = sock
        self.buf = bytearray(initial)

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


class WebSocket:
    """One client WebSocket connection. Sends are safe from several threads;
    :meth:`recv` is for one reader at a time."""

    def __init__(self, sock: socket.socket, leftover: bytes = b""):
        self.sock = sock
        self._r = _Reader(sock, leftover)
        self._wlock = threading.Lock()
        self._closed_sent = False
        self.close_code: Optional[int] = None
        self.close_reason = ""

    @classmethod
    def handshake(cls, sock: socket.socket, host: str, path: str, headers: Mapping[str, str]) -> "WebSocket":
        """Upgrades the connected sock to a WebSocket on path; a refusal
        raises :class:`HandshakeRefused` with the server's answer."""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET %s HTTP/1.1" % path,
            "Host: %s" % host,
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: %s" % key,
            "Sec-WebSocket-Version: 13",
        ]
        lines += ["%s: %s" % kv for kv in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ProtocolError("the daemon closed the connection during the WebSocket handshake")
            buf += chunk
            if len(buf) > 64 << 10:
                raise ProtocolError("WebSocket handshake answer too long")
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ProtocolError("bad WebSocket handshake answer %r" % status_line)
        status = int(parts[1])
        hdrs: Dict[str, str] = {}
        for line in header_lines:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if status != 101:
            body = bytearray(rest)
            length = int(hdrs.get("content-length", "0") or 0)
            while len(body) < min(length, 1 << 20):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            raise HandshakeRefused(status, hdrs, bytes(body))
        if hdrs.get("upgrade", "").lower() != "websocket" or "upgrade" not in hdrs.get("connection", "").lower():
            raise ProtocolError("the daemon did not upgrade the connection to a WebSocket")
        if hdrs.get("sec-websocket-accept") != accept_key(key):
            raise ProtocolError("wrong Sec-WebSocket-Accept in the handshake answer")
        if hdrs.get("sec-websocket-extensions"):
            raise ProtocolError("the daemon negotiated an extension that was not offered")
        return cls(sock, rest)

    # -- sending

    def _send(self, opcode: int, payload: bytes) -> None:
        frame = encode_frame(opcode, payload)
        with self._wlock:
            if self._closed_sent:
                raise OSError("WebSocket is closing")
            self.sock.sendall(frame)

    def send_text(self, text: str) -> None:
        self._send(OP_TEXT, text.encode("utf-8"))

    def send_binary(self, data: bytes) -> None:
        self._send(OP_BINARY, bytes(data))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Sends a close frame (once); the connection stays open for the
        server's answering close."""
        with self._wlock:
            if self._closed_sent:
                return
            self._closed_sent = True
            try:
                self.sock.sendall(encode_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode("utf-8")[:120]))
            except OSError:
                pass

    def abort(self) -> None:
        """Cuts the connection at once (wakes a blocked reader)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    # -- receiving

    def _frame(self) -> Tuple[bool, int, bytes]:
        b0, b1 = self._r.exactly(2)
        if b0 & 0x70:
            raise ProtocolError("the daemon set a reserved bit in a frame")
        if b1 & 0x80:
            raise ProtocolError("the daemon sent a masked frame")
        fin, opcode, n = bool(b0 & 0x80), b0 & 0x0F, b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._r.exactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._r.exactly(8))
        if opcode >= 0x8 and (n > 125 or not fin):
            raise ProtocolError("bad control frame")
        if n > MAX_MESSAGE:
            raise ProtocolError("frame of %d bytes is over the limit" % n)
        return fin, opcode, self._r.exactly(n)

    def recv(self) -> Optional[Tuple[int, bytes]]:
        """The next message as (OP_TEXT or OP_BINARY, payload); None once
        the server closed the connection. Pings are answered here."""
        op: Optional[int] = None
        parts = []
        size = 0
        while True:
            try:
                fin, opcode, payload = self._frame()
            except EOFError:
                return None
            if opcode == OP_PING:
                try:
                    self._send(OP_PONG, payload)
                except OSError:
                    pass
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                if len(payload) >= 2:
                    (self.close_code,) = struct.unpack("!H", payload[:2])
                    self.close_reason = payload[2:].decode("utf-8", "replace")
                self.close(self.close_code or 1000)
                return None
            if opcode == OP_CONT:
                if op is None:
                    raise ProtocolError("continuation frame without a message")
            elif opcode in (OP_TEXT, OP_BINARY):
                if op is not None:
                    raise ProtocolError("new message inside a fragmented one")
                op = opcode
            else:
                raise ProtocolError("unknown opcode %d" % opcode)
            parts.append(payload)
            size += len(payload)
            if size > MAX_MESSAGE:
                raise ProtocolError("message over the limit")
            if fin:
                data = b"".join(parts)
                if op == OP_TEXT:
                    try:
                        data.decode("utf-8")
                    except UnicodeDecodeError:
                        raise ProtocolError("text message is not UTF-8") from None
                return op, data
