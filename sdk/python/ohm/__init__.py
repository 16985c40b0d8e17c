"""Ohm: Linux computers for AI agents, from Python.

    from ohm import Ohm
    ohm = Ohm()                       # the local daemon's Unix socket
    c = ohm.computers.create(template="coding-agent", disk_size_mb=10240)
    print(c.run("df -h / /home/ohm").stdout)
    c.delete()

Standard library only. See the README for the whole surface, and
:class:`ohm.AsyncOhm` for asyncio.
"""

from .aio import AsyncCommandStream, AsyncComputer, AsyncOhm, AsyncProcess, AsyncShell, AsyncWatch
from .client import DEFAULT_DISK_SIZE_MB, CommandStream, Computer, Computers, Files, Ohm, Process, Shell, Watch
from .errors import (
    AlreadyExists,
    BadRequest,
    CommandFailed,
    ComputerUnreachable,
    Conflict,
    DaemonUnreachable,
    InternalError,
    NotFound,
    OhmError,
    TooLarge,
    Unauthorized,
    WrongState,
)
from .models import (
    CommandResult,
    Checkpoint,
    ComputerInfo,
    DiskUsage,
    Event,
    FileInfo,
    FileList,
    Limits,
    Port,
    ProcessInfo,
    WatchEvent,
    WorkspaceUsage,
)

__version__ = "0.1.0"

__all__ = [
    "Ohm", "AsyncOhm", "Computers", "Computer", "AsyncComputer", "Files", "Process", "AsyncProcess",
    "Shell", "AsyncShell", "CommandStream", "AsyncCommandStream", "Watch", "AsyncWatch", "CommandResult", "Event",
    "WatchEvent", "Port", "Checkpoint", "ComputerInfo", "ProcessInfo", "FileInfo", "FileList", "DiskUsage", "WorkspaceUsage", "Limits",
    "DEFAULT_DISK_SIZE_MB",
    "OhmError", "BadRequest", "Unauthorized", "NotFound", "Conflict", "AlreadyExists", "WrongState",
    "TooLarge", "ComputerUnreachable", "InternalError", "DaemonUnreachable", "CommandFailed",
]
