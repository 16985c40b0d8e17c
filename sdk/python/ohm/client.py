"""The synchronous client: :class:`Ohm` and the handles it gives out."""

from __future__ import annotations

import json
import os
import queue
import shutil
import tarfile
import tempfile
import threading
import time
import urllib.parse
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from . import _websocket as wsock
from ._transport import Response, Transport, decode_error, event_data, split_command
from .errors import OhmError, error_for
from .models import (
    Checkpoint,
    CommandResult,
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

Command = Union[str, Sequence[str]]

#: The root disk size ``create`` asks for when not told (as the CLI does).
DEFAULT_DISK_SIZE_MB = 10240


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def _exec_body(command: Optional[Command], env, workdir, user, timeout, **extra) -> Dict[str, Any]:
    cmd, argv = split_command(command)
    body: Dict[str, Any] = {}
    if cmd is not None:
        body["command"] = cmd
    if argv is not None:
        body["argv"] = argv
    if env:
        body["env"] = dict(env)
    if workdir:
        body["workdir"] = workdir
    if user:
        body["user"] = user
    if timeout:
        body["timeout_seconds"] = float(timeout)
    body.update({k: v for k, v in extra.items() if v})
    return body


class Ohm:
    """A client of one Ohm daemon.

    ``Ohm()`` talks to the local daemon on its Unix socket
    (``$OHM_DATA_DIR/ohm.sock``, default ``/var/lib/ohm/ohm.sock``), unless
    ``$OHM_URL`` (and ``$OHM_TOKEN``) point elsewhere. ``Ohm(url=...,
    token=...)`` talks TCP (``ohm serve --listen``; ``ohm token`` prints the
    token); ``Ohm(socket=...)`` another socket. ``timeout`` bounds connecting
    and each wait for the daemon (default: none, as commands may run long).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        socket: Optional[str] = None,
        timeout: Optional[float] = None,
        ssl_context=None,
    ):
        self._t = Transport(url, token, socket_path=socket, timeout=timeout, ssl_context=ssl_context)
        self.computers = Computers(self)

    def __repr__(self) -> str:
        return "Ohm(%r)" % self._t.where

    def health(self) -> None:
        """Checks that the daemon answers (raises otherwise)."""
        self._t.request("GET", "/healthz").json()

    def metrics(self) -> str:
        """The daemon's Prometheus metrics, as text."""
        r = self._t.request("GET", "/metrics")
        try:
            return r.read().decode()
        finally:
            r.close()

    def openapi(self) -> Dict[str, Any]:
        """The daemon's OpenAPI document."""
        return self._t.request("GET", "/v1/openapi.json").json()

    def computer(self, name: str) -> "Computer":
        """A handle on computer ``name``, without asking the daemon (see
        ``computers.get`` for one that does)."""
        return Computer(self, ComputerInfo(name=name, state="unknown"))


class Computers:
    """The computers of a daemon: ``ohm.computers``."""

    def __init__(self, ohm: Ohm):
        self._ohm = ohm

    def create(
        self,
        name: Optional[str] = None,
        *,
        template: Optional[str] = None,
        disk_size_mb: int = DEFAULT_DISK_SIZE_MB,
        cpus: Optional[float] = None,
        memory_mb: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        network: bool = False,
        allow_hosts: Optional[Sequence[str]] = None,
        allow_cidrs: Optional[Sequence[str]] = None,
        idle_timeout: Optional[float] = None,
        on_progress: Optional[Callable[[str], None]] = None,
    ) -> "Computer":
        """Creates a computer and returns it running. Without a name the
        daemon picks a free one; the template defaults to coding-agent.
        ``idle_timeout`` (seconds) stops it after that long unused (the
        daemon's default, 1800, when None; 0 never). ``on_progress`` gets
        each line of template build output while the daemon has to build
        the template first."""
        body: Dict[str, Any] = {"disk_size_mb": disk_size_mb}
        for k, v in (("name", name), ("template", template), ("cpus", cpus), ("memory_mb", memory_mb)):
            if v:
                body[k] = v
        if env:
            body["env"] = dict(env)
        if network:
            body["network"] = True
        # An allow list limits the network to what it names (and implies it).
        if allow_hosts:
            body["allow_hosts"] = list(allow_hosts)
        if allow_cidrs:
            body["allow_cidrs"] = list(allow_cidrs)
        if idle_timeout is not None:
            body["idle_timeout_seconds"] = idle_timeout
        r = self._ohm._t.request("POST", "/v1/computers", json_body=body, headers={"Accept": "application/x-ndjson"})
        info = None
        with r:
            for ev in r.lines():
                if "progress" in ev and on_progress is not None:
                    on_progress(ev["progress"])
                elif "computer" in ev:
                    info = ComputerInfo.from_wire(ev["computer"])
        if info is None:
            raise OhmError("create: the daemon ended its answer without a computer")
        return Computer(self._ohm, info)

    def list(self) -> List["Computer"]:
        """Every computer, oldest first."""
        out = self._ohm._t.request("GET", "/v1/computers").json()
        return [Computer(self._ohm, ComputerInfo.from_wire(c)) for c in out["computers"]]

    def get(self, name: str) -> "Computer":
        """Computer ``name`` with its disk and workspace use and its limits
        (:class:`ohm.NotFound` if there is none)."""
        return Computer(self._ohm, self._get(name))

    def _get(self, name: str) -> ComputerInfo:
        return ComputerInfo.from_wire(self._ohm._t.request("GET", "/v1/computers/" + _q(name)).json())

    def delete(self, name: str) -> None:
        """Deletes computer ``name`` (stopping it first): root disk,
        workspace and metadata."""
        self._ohm._t.request("DELETE", "/v1/computers/" + _q(name)).json()

    def __iter__(self):
        return iter(self.list())


class Computer:
    """A computer: its last known state as attributes (``name``, ``state``,
    ``template``, ``disk_size_mb``, ``cpus``, ``memory_mb``, ``pids``,
    ``env``, ``network``, ``created_at``, and from ``get``/``refresh``
    ``disk``, ``workspace`` and ``limits``), and what can be done with it."""

    name: str
    state: str
    template: str
    disk_size_mb: int
    cpus: float
    memory_mb: int
    pids: int
    env: Dict[str, str]
    network: bool
    disk: Optional[DiskUsage]
    workspace: Optional[WorkspaceUsage]
    limits: Optional[Limits]

    def __init__(self, ohm: Ohm, info: ComputerInfo):
        self._ohm = ohm
        self._set(info)
        self.files = Files(self)

    def _set(self, info: ComputerInfo) -> None:
        self.info = info
        for k, v in vars(info).items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        return "<Computer %s %s>" % (self.name, self.state)

    @property
    def _path(self) -> str:
        return "/v1/computers/" + _q(self.name)

    # -- lifecycle

    def refresh(self) -> "Computer":
        """Reads the computer's state, use and limits again."""
        self._set(self._ohm.computers._get(self.name))
        return self

    def start(self) -> "Computer":
        """Starts the computer (:class:`ohm.WrongState` unless stopped)."""
        self._set(ComputerInfo.from_wire(self._ohm._t.request("POST", self._path + "/start").json()))
        return self

    def stop(self) -> "Computer":
        """Stops the computer; its workspace is flushed and kept."""
        self._set(ComputerInfo.from_wire(self._ohm._t.request("POST", self._path + "/stop").json()))
        return self

    def set(
        self,
        *,
        idle_timeout: Optional[float] = None,
        allow_hosts: Optional[Sequence[str]] = None,
        allow_cidrs: Optional[Sequence[str]] = None,
    ) -> "Computer":
        """Changes settings of the computer, running or stopped; a setting
        left out (None) stays as it is. ``idle_timeout`` (seconds): how
        long it may go unused (no command, shell, file or port traffic)
        before it stops itself, 0 never; the next run starts it again.
        ``allow_hosts`` (exact names or ``*.example.org``) and
        ``allow_cidrs`` each replace the computer's egress allow list (an
        empty list clears it); a running computer follows at once. Bad
        input raises :class:`ohm.BadRequest` and changes nothing."""
        body: Dict[str, Any] = {}
        if idle_timeout is not None:
            body["idle_timeout_seconds"] = idle_timeout
        if allow_hosts is not None:
            body["allow_hosts"] = list(allow_hosts)
        if allow_cidrs is not None:
            body["allow_cidrs"] = list(allow_cidrs)
        self._set(ComputerInfo.from_wire(self._ohm._t.request("PATCH", self._path, json_body=body).json()))
        return self

    def delete(self) -> None:
        """Deletes the computer with its disk and workspace."""
        self._ohm.computers.delete(self.name)
        self.state = "deleted"

    # -- checkpoints (memory and processes are not saved)

    def checkpoint(self, label: str = "") -> Checkpoint:
        """Saves the computer's disks; a running computer keeps running."""
        body = {"label": label} if label else {}
        return Checkpoint.from_wire(self._ohm._t.request("POST", self._path + "/checkpoints", json_body=body).json())

    def checkpoints(self) -> List[Checkpoint]:
        """The computer's checkpoints, oldest first."""
        out = self._ohm._t.request("GET", self._path + "/checkpoints").json()
        return [Checkpoint.from_wire(c) for c in out["checkpoints"]]

    def delete_checkpoint(self, id: str) -> None:
        """Deletes checkpoint ``id``."""
        self._ohm._t.request("DELETE", self._path + "/checkpoints/" + _q(id)).json()

    def restore(self, checkpoint: str) -> "Computer":
        """Puts the disks back to ``checkpoint``; a running computer is
        stopped and started again (its processes restart)."""
        self._set(ComputerInfo.from_wire(self._ohm._t.request("POST", self._path + "/restore", json_body={"checkpoint": checkpoint}).json()))
        return self

    def fork(self, name: Optional[str] = None, checkpoint: Optional[str] = None) -> "Computer":
        """Makes and starts a copy of the computer (from ``checkpoint``, or
        its disks now) sharing their blocks, and returns it."""
        body: Dict[str, Any] = {}
        if name:
            body["name"] = name
        if checkpoint:
            body["checkpoint"] = checkpoint
        return Computer(self._ohm, ComputerInfo.from_wire(self._ohm._t.request("POST", self._path + "/fork", json_body=body).json()))

    # -- the root disk

    def resize(self, disk_size_mb: int) -> "Computer":
        """Grows the root disk (the space outside /home/ohm) to
        ``disk_size_mb``: a running computer at once (``df`` inside shows
        it as this returns), a stopped one at its next start. A root disk
        never shrinks: a smaller size, or growth the host cannot give,
        raises :class:`ohm.BadRequest`; a computer still being created
        :class:`ohm.WrongState`. The computer's state comes back with its
        new ``disk_size_mb`` and ``disk`` use."""
        body = {"disk_size_mb": int(disk_size_mb)}
        self._set(ComputerInfo.from_wire(self._ohm._t.request("POST", self._path + "/resize", json_body=body).json()))
        return self

    # -- preview URLs of ports

    def expose(self, port: int, *, public: bool = False) -> Port:
        """Exposes TCP ``port`` of the computer at a preview URL on the
        daemon's TCP listener (``ohm serve --listen``): HTTP and WebSocket
        requests to ``Port.url`` reach the port inside, which a server
        there listens on (0.0.0.0 or 127.0.0.1; until one does, requests
        answer 502). A private preview (the default) takes the share token
        its URL carries, or the API token; ``public=True`` opens it to
        anyone who can reach the listener. Exposing an exposed port
        changes only ``public``. A port outside 1-65535 raises
        :class:`ohm.BadRequest`."""
        body = {"public": True} if public else {}
        return Port.from_wire(self._ohm._t.request("POST", "%s/ports/%d" % (self._path, int(port)), json_body=body).json())

    def ports(self) -> List[Port]:
        """The computer's exposed ports with their preview URLs."""
        out = self._ohm._t.request("GET", self._path + "/ports").json()
        return [Port.from_wire(p) for p in out["ports"]]

    def unexpose(self, port: int) -> Port:
        """Removes the preview URL of ``port`` (connections already open
        through it stay until they close) and returns what it was;
        :class:`ohm.NotFound` if it is not exposed."""
        return Port.from_wire(self._ohm._t.request("DELETE", "%s/ports/%d" % (self._path, int(port))).json())

    # -- changes to files

    def watch(self, path: Optional[str] = None) -> "Watch":
        """Watches the changes to files under ``path`` (``/home/ohm``, the
        default, or below it; it need not exist yet) of the running
        computer, and returns once the watch is in place: changes made
        after it returns are reported. Iterate the returned
        :class:`Watch` for :class:`ohm.WatchEvent` s (created, modified,
        deleted, moved, overflow), the last one ``"ended"`` when the
        computer stops; closing it (or leaving its ``with`` block) ends
        the watch. Bursts are coalesced per path; a reader that falls
        behind loses events and gets an ``"overflow"`` event instead of
        holding the computer up. A path outside /home/ohm raises
        :class:`ohm.BadRequest`; a computer that is not running, or whose
        workspace predates the block layout, :class:`ohm.WrongState`. A
        watch is not activity: it does not keep the computer from
        stopping as idle."""
        r = self._ohm._t.request("GET", self._path + "/watch", query={"path": path or None}, headers={"Accept": "application/x-ndjson"})
        w = Watch(r)
        try:
            first = next(w._it, None)
        except BaseException:
            w.close()
            raise
        if first is None or first.type != "watching":
            w.close()
            raise OhmError("watch %s: the daemon began with %s, not a watching event" % (self.name, first.type if first else "nothing"))
        w.path = first.path
        return w

    # -- commands

    def run(
        self,
        command: Command,
        *,
        env: Optional[Mapping[str, str]] = None,
        workdir: Optional[str] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        input: Union[bytes, str, None] = None,
        check: bool = False,
    ) -> CommandResult:
        """Runs a command and returns its output and exit code (starting
        the computer first if stopped). A string runs through the
        computer's shell (``bash -lc``), a list as is. ``timeout`` (seconds)
        kills it; ``input`` is its stdin; ``check=True`` raises
        :class:`ohm.CommandFailed` on a non-zero exit code."""
        if input is not None:
            data = input.encode() if isinstance(input, str) else bytes(input)
            with self.shell(command, tty=False, env=env, workdir=workdir, user=user, timeout=timeout) as sh:
                if data:
                    sh.send(data)
                sh.close_stdin()
                result = sh.collect()
        else:
            with self.run_stream(command, env=env, workdir=workdir, user=user, timeout=timeout) as s:
                result = s.collect()
        return result.check() if check else result

    def run_stream(
        self,
        command: Command,
        *,
        env: Optional[Mapping[str, str]] = None,
        workdir: Optional[str] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> "CommandStream":
        """Runs a command, its output coming as it is written: iterate the
        returned stream for :class:`ohm.Event` s, the last one of kind
        ``"exit"``. Closing the stream early kills the command."""
        body = _exec_body(command, env, workdir, user, timeout)
        r = self._ohm._t.request("POST", self._path + "/exec", json_body=body, headers={"Accept": "application/x-ndjson"})
        return CommandStream(r)

    def run_background(
        self,
        command: Command,
        *,
        env: Optional[Mapping[str, str]] = None,
        workdir: Optional[str] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> "Process":
        """Starts a command in the background and returns as soon as it
        runs: it outlives this client, its latest output is kept (1 MiB)
        for :meth:`Process.attach`, and it runs until it exits or is
        killed."""
        body = _exec_body(command, env, workdir, user, timeout, background=True)
        r = self._ohm._t.request("POST", self._path + "/exec", json_body=body, headers={"Accept": "application/x-ndjson"})
        with r:
            for ev in r.lines():
                if "process" in ev:
                    return Process(self, ProcessInfo.from_wire(ev["process"]))
        raise OhmError("the daemon ended a background exec without a process")

    def processes(self) -> List["Process"]:
        """The computer's background processes, running or exited, oldest
        first."""
        out = self._ohm._t.request("GET", self._path + "/processes").json()
        return [Process(self, ProcessInfo.from_wire(p)) for p in out["processes"]]

    def process(self, id: str) -> "Process":
        """Background process ``id``."""
        return Process(self, ProcessInfo.from_wire(self._ohm._t.request("GET", self._path + "/processes/" + _q(id)).json()))

    def shell(
        self,
        command: Optional[Command] = None,
        *,
        tty: bool = True,
        rows: int = 24,
        cols: int = 80,
        env: Optional[Mapping[str, str]] = None,
        workdir: Optional[str] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        background: bool = False,
    ) -> "Shell":
        """An interactive session over a WebSocket: a login shell (or
        ``command``) with stdin and, with ``tty``, a PTY of rows x cols.
        Closing it kills the command unless ``background``, which also
        makes it a :class:`Process` (``shell.process``) to come back to
        with :meth:`Process.connect`."""
        req = _exec_body(command, env, workdir, user, timeout, background=background)
        if tty:
            req.update(tty=True, rows=rows, cols=cols)
        sh = Shell(self._ohm._t, self._path + "/exec", computer=self)
        sh._start(json.dumps(req), wait_process=background)
        return sh


class CommandStream:
    """A command's output as it comes: iterate for :class:`ohm.Event` s
    (the last one is ``"exit"``), or :meth:`collect` the rest. ``exit_code``
    is set once the exit event was read. Closing it before the end kills
    the command (or, for a background process, detaches)."""

    def __init__(self, response: Response):
        self._r = response
        self.exit_code: Optional[int] = None
        self._it = self._events()

    def _events(self) -> Iterator[Event]:
        try:
            for ev in self._r.lines():
                if "stream" in ev:
                    yield Event(kind=ev["stream"], data=event_data(ev))
                elif "dropped" in ev:
                    yield Event(kind="dropped", dropped=ev["dropped"])
                elif "exit_code" in ev:
                    self.exit_code = ev["exit_code"]
                    yield Event(kind="exit", exit_code=self.exit_code)
                    return
            raise OhmError("the daemon ended the command's output without an exit code")
        finally:
            self._r.close()

    def __iter__(self) -> Iterator[Event]:
        return self._it

    def __next__(self) -> Event:
        return next(self._it)

    def collect(self) -> CommandResult:
        """Reads the rest of the output and returns it with the exit code."""
        out, err = [], []
        for ev in self._it:
            if ev.kind == "stdout":
                out.append(ev.data)
            elif ev.kind == "stderr":
                err.append(ev.data)
        if self.exit_code is None:
            raise OhmError("the command's output was closed before its exit code")
        return CommandResult(self.exit_code, b"".join(out), b"".join(err))

    def close(self) -> None:
        """Stops reading: kills the command unless it runs in the
        background. Safe from another thread."""
        self._r.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Watch:
    """The changes under a path of a computer's workspace as they come:
    iterate for :class:`ohm.WatchEvent` s; the last one is ``"ended"``
    (``reason`` says why; the computer stopped). ``path`` is the watched
    path. :meth:`close` ends the watch (safe from another thread: a loop
    blocked on the next event then ends); so does leaving a ``with``
    block. A stream the daemon cut before its ended event raises
    :class:`ohm.OhmError`."""

    def __init__(self, response: Response):
        self._r = response
        self.path = ""
        #: Why the watch ended, once its ended event was read.
        self.reason: Optional[str] = None
        self._closed = False
        self._it = self._events()

    def _events(self) -> Iterator[WatchEvent]:
        try:
            for d in self._r.lines():
                ev = WatchEvent.from_wire(d)
                if ev.type == "ended":
                    self.reason = ev.reason
                    yield ev
                    return
                yield ev
            if not self._closed:
                raise OhmError("the daemon ended the watch without an ended event")
        except Exception:  # noqa: BLE001 - whatever a read cut by close raised
            if self._closed:
                return  # closed while a read waited: the watch is simply over
            raise
        finally:
            self._r.close()

    def __iter__(self) -> Iterator[WatchEvent]:
        return self._it

    def __next__(self) -> WatchEvent:
        return next(self._it)

    def close(self) -> None:
        """Ends the watch. Safe from another thread."""
        self._closed = True
        self._r.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Process:
    """A background process: its last known state as attributes (``id``,
    ``state``, ``command``, ``argv``, ``exit_code``, ``error``,
    ``started_at``, ``ended_at``)."""

    id: str
    state: str
    exit_code: Optional[int]

    def __init__(self, computer: Computer, info: ProcessInfo):
        self.computer = computer
        self._set(info)

    def _set(self, info: ProcessInfo) -> None:
        self.info = info
        for k, v in vars(info).items():
            if k != "computer":
                setattr(self, k, v)

    def __repr__(self) -> str:
        return "<Process %s %s in %s>" % (self.id, self.state, self.computer.name)

    @property
    def _path(self) -> str:
        return self.computer._path + "/processes/" + _q(self.id)

    def refresh(self) -> "Process":
        self._set(ProcessInfo.from_wire(self.computer._ohm._t.request("GET", self._path).json()))
        return self

    def attach(self) -> CommandStream:
        """Its output from the oldest byte still kept, then live, until it
        exits. Closing the stream detaches; the process keeps running."""
        r = self.computer._ohm._t.request("GET", self._path + "/attach", headers={"Accept": "application/x-ndjson"})
        return CommandStream(r)

    def wait(self) -> CommandResult:
        """Waits for it to exit and returns its (kept) output and exit code."""
        with self.attach() as s:
            res = s.collect()
        self.refresh()
        return res

    def kill(self) -> "Process":
        """Kills it (if it still runs) and makes the daemon forget it."""
        self._set(ProcessInfo.from_wire(self.computer._ohm._t.request("DELETE", self._path).json()))
        return self

    def connect(self) -> "Shell":
        """Attaches a :class:`Shell` to a process started by
        ``shell(background=True)``: its output, and stdin and resizes to it.
        Closing the shell detaches."""
        sh = Shell(self.computer._ohm._t, self._path + "/attach", computer=self.computer)
        sh._start(None, wait_process=False)
        sh.process = self
        return sh


_END = object()


class Shell:
    """An interactive session: ``send`` stdin, ``read``/``read_until``
    output (with a PTY both streams come as stdout), ``resize``,
    ``close_stdin``, ``wait`` for the exit code; or iterate for
    :class:`ohm.Event` s. A context manager: leaving it closes the
    session."""

    def __init__(self, transport: Transport, path: str, *, computer: Computer):
        self._t = transport
        self._path = path
        self.computer = computer
        self.process: Optional[Process] = None
        self.exit_code: Optional[int] = None
        self._error: Optional[BaseException] = None
        self._q: "queue.Queue[Any]" = queue.Queue()
        self._pending = b""
        self._ended = False
        self._closing = False
        self._started = threading.Event()
        self._done = threading.Event()

    def _start(self, request: Optional[str], wait_process: bool) -> None:
        sock = self._t.socket_for_upgrade()
        try:
            self._ws = wsock.WebSocket.handshake(sock, self._t.host_header(), self._path, self._t.auth_headers())
        except wsock.HandshakeRefused as e:
            sock.close()
            raise decode_error(e.status, e.body) from None
        except BaseException:
            sock.close()
            raise
        if request is not None:
            self._ws.send_text(request)
        threading.Thread(target=self._reader, name="ohm-shell-reader", daemon=True).start()
        if wait_process:
            self._started.wait()
            if self.process is None:
                self._raise()
                raise OhmError("the daemon ended a background session without a process")

    def _reader(self) -> None:
        try:
            while True:
                m = self._ws.recv()
                if m is None:
                    if self.exit_code is None and self._error is None and not self._closing:
                        self._error = OhmError("the session ended without an exit code")
                    return
                op, data = m
                if op == wsock.OP_BINARY:
                    if len(data) > 1:
                        self._q.put(Event(kind="stderr" if data[0] == 2 else "stdout", data=data[1:]))
                    continue
                ev = json.loads(data)
                if "process" in ev:
                    self.process = Process(self.computer, ProcessInfo.from_wire(ev["process"]))
                    self._started.set()
                elif "dropped" in ev:
                    self._q.put(Event(kind="dropped", dropped=ev["dropped"]))
                elif "error" in ev:
                    err = ev["error"] or {}
                    self._error = error_for(err.get("code"), err.get("message") or "the session failed")
                    return
                elif "exit_code" in ev:
                    self.exit_code = ev["exit_code"]
                    self._q.put(Event(kind="exit", exit_code=self.exit_code))
                    return
        except BaseException as e:  # noqa: BLE001 - reported to the reader of the session
            if not self._closing:
                self._error = e
        finally:
            self._ws.close()
            self._ws.abort()
            self._started.set()
            self._done.set()
            self._q.put(_END)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    # -- input

    def send(self, data: Union[bytes, str]) -> None:
        """Sends data to the command's stdin."""
        self._ws.send_binary(data.encode() if isinstance(data, str) else data)

    def resize(self, rows: int, cols: int) -> None:
        """Tells the PTY its new window size."""
        self._ws.send_text(json.dumps({"type": "resize", "rows": rows, "cols": cols}))

    def close_stdin(self) -> None:
        """Closes the command's stdin (it reads end of file)."""
        self._ws.send_text(json.dumps({"type": "eof"}))

    # -- output

    def _next(self, timeout: Optional[float]) -> Optional[Event]:
        if self._ended:
            return None
        try:
            ev = self._q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("no output from the session within %gs" % timeout) from None
        if ev is _END:
            self._ended = True
            return None
        return ev

    def __iter__(self) -> Iterator[Event]:
        while True:
            ev = self._next(None)
            if ev is None:
                self._raise()
                return
            yield ev

    def read(self, timeout: Optional[float] = None) -> bytes:
        """The next output (stdout and stderr alike); b"" once the session
        ended. :class:`TimeoutError` if nothing came within ``timeout``."""
        if self._pending:
            out, self._pending = self._pending, b""
            return out
        while True:
            ev = self._next(timeout)
            if ev is None:
                self._raise()
                return b""
            if ev.kind in ("stdout", "stderr"):
                return ev.data

    def read_until(self, marker: Union[bytes, str], timeout: Optional[float] = 30) -> bytes:
        """Output up to and including ``marker``. :class:`TimeoutError` if it
        did not come within ``timeout`` seconds, :class:`ohm.OhmError` if the
        session ended first."""
        m = marker.encode() if isinstance(marker, str) else marker
        buf = self._pending
        self._pending = b""
        deadline = None if timeout is None else time.monotonic() + timeout
        while m not in buf:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                chunk = self.read(timeout=left)
            except TimeoutError:
                self._pending = buf
                raise TimeoutError("%r did not come within %gs; got %r" % (m, timeout, buf[-200:])) from None
            if not chunk:
                self._pending = buf
                raise OhmError("the session ended before %r; got %r" % (m, buf[-200:]))
            buf += chunk
        i = buf.index(m) + len(m)
        self._pending = buf[i:]
        return buf[:i]

    def wait(self, timeout: Optional[float] = None) -> int:
        """Waits for the command to exit (output not read is dropped) and
        returns its exit code."""
        if not self._done.wait(timeout):
            raise TimeoutError("the session did not end within %gs" % timeout)
        self._raise()
        if self.exit_code is None:
            raise OhmError("the session ended without an exit code")
        return self.exit_code

    def collect(self) -> CommandResult:
        """Reads all output until the command exits."""
        out, err = [self._pending], []
        self._pending = b""
        for ev in self:
            if ev.kind == "stdout":
                out.append(ev.data)
            elif ev.kind == "stderr":
                err.append(ev.data)
        return CommandResult(self.wait(), b"".join(out), b"".join(err))

    def close(self) -> None:
        """Ends the session: kills the command unless it runs in the
        background (then it detaches)."""
        self._closing = True
        if not self._done.is_set():
            self._ws.close()
            if not self._done.wait(5):
                self._ws.abort()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Files:
    """Files of a computer: ``computer.files``. Paths are absolute paths in
    the computer; I/O happens inside it as ``user`` (ohm unless ``"root"``),
    so paths and symlinks resolve in the computer and cannot reach the
    host. Transfers stream: any size, constant memory."""

    def __init__(self, computer: Computer):
        self._c = computer

    def _url(self, sub: str = "") -> str:
        return self._c._path + "/files" + sub

    def _t(self) -> Transport:
        return self._c._ohm._t

    def write(self, path: str, data: Union[bytes, str, BinaryIO], *, user: Optional[str] = None) -> int:
        """Writes data (bytes, text, or a binary file object, streamed) to
        the file at path, created or replaced once complete. Returns the
        bytes written."""
        headers = {"Content-Type": "application/octet-stream"}
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            try:
                size = os.fstat(data.fileno()).st_size - data.tell()
                headers["Content-Length"] = str(size)
            except (AttributeError, OSError, ValueError):
                pass
        out = self._t().request("PUT", self._url(), query={"path": path, "user": user}, body=data, headers=headers).json()
        return out["bytes"]

    def read(self, path: str, *, user: Optional[str] = None) -> bytes:
        """The contents of the file at path."""
        r = self._t().request("GET", self._url(), query={"path": path, "user": user})
        with r:
            return r.read()

    def read_text(self, path: str, *, encoding: str = "utf-8", user: Optional[str] = None) -> str:
        return self.read(path, user=user).decode(encoding)

    def upload(self, local_path: str, path: str, *, user: Optional[str] = None) -> int:
        """Copies the local file local_path to path in the computer."""
        with open(local_path, "rb") as f:
            return self.write(path, f, user=user)

    def download(self, path: str, local_path: str, *, user: Optional[str] = None) -> None:
        """Copies the file at path to the local file local_path (replaced
        only once complete)."""
        r = self._t().request("GET", self._url(), query={"path": path, "user": user})
        d = os.path.dirname(os.path.abspath(local_path))
        fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(local_path) + ".")
        try:
            with r, os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
            os.replace(tmp, local_path)
        except BaseException:
            os.unlink(tmp)
            raise

    def upload_dir(self, local_dir: str, path: str, *, user: Optional[str] = None) -> None:
        """Copies the contents of local_dir into the directory path (created
        if needed), as a tar stream. Symlinks are copied as symlinks."""
        if not os.path.isdir(local_dir):
            raise NotADirectoryError("upload_dir: %s is not a directory" % local_dir)
        rfd, wfd = os.pipe()
        errors: List[BaseException] = []

        def produce():
            try:
                with os.fdopen(wfd, "wb") as w, tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT) as tf:
                    for root, dirs, files in os.walk(local_dir):
                        dirs.sort()
                        for n in sorted(dirs) + sorted(files):
                            full = os.path.join(root, n)
                            tf.add(full, arcname=os.path.relpath(full, local_dir), recursive=False)
            except BaseException as e:  # noqa: BLE001 - re-raised by the caller
                errors.append(e)

        t = threading.Thread(target=produce, name="ohm-upload-dir", daemon=True)
        t.start()
        try:
            with os.fdopen(rfd, "rb") as body:
                self._t().request(
                    "PUT", self._url(), query={"path": path, "user": user, "archive": "tar"}, body=body,
                    headers={"Content-Type": "application/x-tar"},
                ).json()
        finally:
            t.join()
        if errors and not isinstance(errors[0], BrokenPipeError):
            raise errors[0]

    def download_dir(self, path: str, local_dir: str, *, user: Optional[str] = None) -> None:
        """Copies the contents of the directory path into local_dir
        (created if needed). What the computer sends cannot write outside
        local_dir: absolute names, .. and paths through symlinks are
        refused, and only files, directories and symlinks are made."""
        r = self._t().request("GET", self._url(), query={"path": path, "user": user, "archive": "tar"})
        with r:
            _extract(r, local_dir)
            msg = r.trailer("Ohm-Error")
        if msg:
            raise error_for("internal", msg)

    def stat(self, path: str, *, user: Optional[str] = None) -> FileInfo:
        """Describes path (a symlink itself, not its target)."""
        return FileInfo.from_wire(self._t().request("GET", self._url("/stat"), query={"path": path, "user": user}).json())

    def list(self, path: str, *, user: Optional[str] = None, limit: Optional[int] = None) -> FileList:
        """The entries of the directory path, sorted by name (at most
        ``limit``, default 10000); ``.truncated`` of the result says the
        directory has more."""
        out = self._t().request("GET", self._url("/list"), query={"path": path, "user": user, "limit": limit}).json()
        return FileList((FileInfo.from_wire(e) for e in out["entries"]), truncated=bool(out.get("truncated", False)))

    def exists(self, path: str, *, user: Optional[str] = None) -> bool:
        from .errors import NotFound

        try:
            self.stat(path, user=user)
            return True
        except NotFound:
            return False


def _safe_parts(name: str) -> List[str]:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise OhmError("refusing unsafe name %r in the archive" % name)
    return parts


def _ensure_dir(dest: str, parts: List[str]) -> str:
    """dest/parts..., each component a real directory (made if missing,
    never a symlink)."""
    p = dest
    for part in parts:
        p = os.path.join(p, part)
        if os.path.islink(p) or (os.path.lexists(p) and not os.path.isdir(p)):
            raise OhmError("refusing to extract through %s: not a directory" % p)
        if not os.path.lexists(p):
            os.mkdir(p, 0o755)
    return p


def _extract(stream, local_dir: str) -> None:
    os.makedirs(local_dir, exist_ok=True)
    dest = os.path.realpath(local_dir)
    dirmodes = []
    with tarfile.open(fileobj=stream, mode="r|") as tf:
        for m in tf:
            parts = _safe_parts(m.name)
            if not parts:
                continue
            parent = _ensure_dir(dest, parts[:-1])
            target = os.path.join(parent, parts[-1])
            if m.isdir():
                _ensure_dir(dest, parts)
                dirmodes.append((target, m.mode & 0o777, m.mtime))
                continue
            if not (m.isreg() or m.issym()):
                continue  # hard links, devices, fifos: not made on the host
            if os.path.islink(target) or (os.path.lexists(target) and not os.path.isdir(target)):
                os.unlink(target)
            elif os.path.isdir(target):
                raise OhmError("refusing to replace the directory %s with a file" % target)
            if m.issym():
                os.symlink(m.linkname, target)
                continue
            src = tf.extractfile(m)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(src, f, 1 << 20)
            os.chmod(target, m.mode & 0o777)
            os.utime(target, (m.mtime, m.mtime))
    for d, mode, mtime in reversed(dirmodes):
        os.chmod(d, mode | 0o700)
        os.utime(d, (mtime, mtime))
