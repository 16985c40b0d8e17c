"""Plain data the daemon answers with: usage, limits, files, results, events."""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional

_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$")


def parse_time(s: Optional[str]) -> Optional[_dt.datetime]:
    """An RFC 3339 time as the daemon writes it (nanoseconds, Z), aware."""
    if not s or s.startswith("0001-01-01"):
        return None
    m = _TIME.match(s)
    if not m:
        raise ValueError("bad time %r" % s)
    base, frac, tz = m.groups()
    t = _dt.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S")
    if frac:
        t = t.replace(microsecond=int(frac[:6].ljust(6, "0")))
    if tz == "Z":
        return t.replace(tzinfo=_dt.timezone.utc)
    sign = 1 if tz[0] == "+" else -1
    off = _dt.timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
    return t.replace(tzinfo=_dt.timezone(sign * off))


@dataclass
class Limits:
    """The resource limits in force for a computer."""

    cpus: float = 0.0
    memory_bytes: int = 0
    pids: int = 0

    @classmethod
    def from_wire(cls, d: Optional[Mapping[str, Any]]) -> Optional["Limits"]:
        if d is None:
            return None
        return cls(cpus=d.get("cpus", 0.0), memory_bytes=d.get("memory_bytes", 0), pids=d.get("pids", 0))


@dataclass
class DiskUsage:
    """A root disk's size and use, in bytes."""

    size_bytes: int = 0
    used_bytes: int = 0

    @classmethod
    def from_wire(cls, d: Optional[Mapping[str, Any]]) -> Optional["DiskUsage"]:
        if d is None:
            return None
        return cls(size_bytes=d.get("size_bytes", 0), used_bytes=d.get("used_bytes", 0))


@dataclass
class WorkspaceUsage:
    """What a computer's workspace (/home/ohm) holds."""

    used_bytes: int = 0
    stored_bytes: int = 0
    files: int = 0
    capacity_bytes: int = 0
    replica_lag_seconds: Optional[float] = None
    layout: str = ""  # "block" (a kernel filesystem on an ohmfs image) or "file"
    incident: str = ""  # what went wrong with its storage and was repaired, if anything

    @classmethod
    def from_wire(cls, d: Optional[Mapping[str, Any]]) -> Optional["WorkspaceUsage"]:
        if d is None:
            return None
        return cls(
            used_bytes=d.get("used_bytes", 0),
            stored_bytes=d.get("stored_bytes", 0),
            files=d.get("files", 0),
            capacity_bytes=d.get("capacity_bytes", 0),
            replica_lag_seconds=d.get("replica_lag_seconds"),
            layout=d.get("layout", ""),
            incident=d.get("incident", ""),
        )


@dataclass
class FileInfo:
    """A path in a computer (a symlink itself, not its target)."""

    path: str
    name: str
    type: str  # file, dir, symlink or other
    size: int
    mode: int  # permission bits, e.g. 0o644
    mtime: Optional[_dt.datetime]
    link_target: str = ""

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @property
    def is_file(self) -> bool:
        return self.type == "file"

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> "FileInfo":
        return cls(
            path=d["path"],
            name=d["name"],
            type=d["type"],
            size=d.get("size", 0),
            mode=d.get("mode", 0),
            mtime=parse_time(d.get("mtime")),
            link_target=d.get("link_target", ""),
        )


class FileList(List[FileInfo]):
    """A directory listing: a list of FileInfo sorted by name, and
    ``truncated``, true when the directory has more entries than the
    listing's limit returned."""

    def __init__(self, entries: Iterable[FileInfo] = (), truncated: bool = False):
        super().__init__(entries)
        self.truncated = truncated


@dataclass
class CommandResult:
    """What a command printed and how it exited. A non-zero exit code is a
    result, not an error (unless ``check=True`` was asked)."""

    exit_code: int
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self) -> "CommandResult":
        """Raises :class:`ohm.CommandFailed` unless the exit code is 0."""
        if self.exit_code != 0:
            from .errors import CommandFailed

            raise CommandFailed(self)
        return self


@dataclass(frozen=True)
class Event:
    """One event of a command's output stream.

    ``kind`` is ``"stdout"`` or ``"stderr"`` (``data`` holds the bytes, in
    the order the command wrote them), ``"exit"`` (``exit_code``, always the
    last event) or ``"dropped"`` (``dropped`` bytes of a background
    process's output were lost from its ring before they were read).
    """

    kind: str
    data: bytes = b""
    exit_code: Optional[int] = None
    dropped: int = 0

    @property
    def text(self) -> str:
        """``data`` as text (a character split across two events shows as
        U+FFFD; collect the bytes to decode them whole)."""
        return self.data.decode("utf-8", "replace")


@dataclass
class ProcessInfo:
    """A background process as the daemon reports it."""

    id: str
    computer: str
    state: str  # running or exited
    command: str = ""
    argv: List[str] = field(default_factory=list)
    exit_code: Optional[int] = None
    error: str = ""
    started_at: Optional[_dt.datetime] = None
    ended_at: Optional[_dt.datetime] = None

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> "ProcessInfo":
        return cls(
            id=d["id"],
            computer=d["computer"],
            state=d["state"],
            command=d.get("command", ""),
            argv=list(d.get("argv") or []),
            exit_code=d.get("exit_code"),
            error=d.get("error", ""),
            started_at=parse_time(d.get("started_at")),
            ended_at=parse_time(d.get("ended_at")),
        )


@dataclass
class Port:
    """An exposed port of a computer and its preview URL: HTTP and
    WebSocket requests to ``url`` (on the daemon's TCP listener) reach the
    port inside the computer. ``url`` carries the port's share token
    unless ``public``; it is "" when the daemon serves no TCP listener."""

    port: int
    public: bool = False
    url: str = ""
    created_at: Optional[_dt.datetime] = None

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> "Port":
        return cls(port=d["port"], public=d.get("public", False), url=d.get("url", ""), created_at=parse_time(d.get("created_at")))


@dataclass(frozen=True)
class WatchEvent:
    """One change under a watched path of a computer's workspace.

    ``type`` is ``"created"``, ``"modified"``, ``"deleted"`` or ``"moved"``
    (``old_path`` was renamed to ``path``), with ``path`` as the computer
    sees it and ``dir`` true for a directory; ``"overflow"``: events were
    dropped (at least ``dropped``, 0 unknown) because the reader fell
    behind, list ``path`` again to catch up; ``"ended"``, always the last:
    the watch is over (``reason`` says why, e.g. the computer stopped).
    """

    type: str
    path: str = ""
    old_path: str = ""
    dir: bool = False
    dropped: int = 0
    reason: str = ""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> "WatchEvent":
        return cls(
            type=d["type"],
            path=d.get("path", ""),
            old_path=d.get("old_path", ""),
            dir=d.get("dir", False),
            dropped=d.get("dropped", 0),
            reason=d.get("reason", ""),
        )


@dataclass
class ComputerInfo:
    """A computer as the daemon reports it; ``disk``, ``workspace`` and
    ``limits`` come with :meth:`ohm.Computer.refresh` and ``get``
    (its exposed ports with :meth:`ohm.Computer.ports`)."""

    name: str
    state: str  # creating, running or stopped
    template: str = ""
    disk_size_mb: int = 0
    cpus: float = 0.0
    memory_mb: int = 0
    pids: int = 0
    env: Dict[str, str] = field(default_factory=dict)
    network: bool = False
    created_at: Optional[_dt.datetime] = None
    stop_reason: str = ""  # why it last stopped when that was not asked for (its init died)
    stopped_at: Optional[_dt.datetime] = None
    # seconds it may go unused (no command, shell, file or port traffic)
    # before it stops itself; 0: never
    idle_timeout_seconds: float = 0.0
    idle_stop_at: Optional[_dt.datetime] = None  # when it will, unless used (refresh/get, while running idle)
    active_sessions: int = 0  # sessions keeping it busy now (refresh/get)
    disk: Optional[DiskUsage] = None
    workspace: Optional[WorkspaceUsage] = None
    limits: Optional[Limits] = None
    # The egress allow list: with either set, the computer reaches only these.
    allow_hosts: List[str] = field(default_factory=list)
    allow_cidrs: List[str] = field(default_factory=list)

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> "ComputerInfo":
        return cls(
            name=d["name"],
            state=d["state"],
            template=d.get("template", ""),
            disk_size_mb=d.get("disk_size_mb", 0),
            cpus=d.get("cpus", 0.0),
            memory_mb=d.get("memory_mb", 0),
            pids=d.get("pids", 0),
            env=dict(d.get("env") or {}),
            network=d.get("network", False),
            created_at=parse_time(d.get("created_at")),
            stop_reason=d.get("stop_reason", ""),
            stopped_at=parse_time(d.get("stopped_at")),
            idle_timeout_seconds=d.get("idle_timeout_seconds", 0.0),
            idle_stop_at=parse_time(d.get("idle_stop_at")),
            active_sessions=d.get("active_sessions", 0),
            disk=DiskUsage.from_wire(d.get("disk")),
            workspace=WorkspaceUsage.from_wire(d.get("workspace")),
            limits=Limits.from_wire(d.get("limits")),
            allow_hosts=list(d.get("allow_hosts") or []),
            allow_cidrs=list(d.get("allow_cidrs") or []),
        )


@dataclass
class Checkpoint:
    """A saved point of a computer's disks (workspace and root disk).
    Memory and processes are not saved: a restored or forked computer
    boots fresh on the saved disks."""

    id: str
    created_at: Optional[_dt.datetime] = None
    label: str = ""
    bytes: int = 0  # what the checkpoint alone holds: what deleting it gives back
    disks: List[str] = field(default_factory=list)

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> "Checkpoint":
        return cls(
            id=d["id"],
            created_at=parse_time(d.get("created_at")),
            label=d.get("label", ""),
            bytes=d.get("bytes", 0),
            disks=list(d.get("disks") or []),
        )
