"""The asyncio client: :class:`AsyncOhm`, the same surface as :class:`ohm.Ohm`
with every call awaited.

It runs the synchronous client's blocking I/O in a thread pool of its own
(so long-running commands never starve the event loop's default one), and
cancelling a task cuts the connection it waits on: a cancelled ``run``
kills its command, as closing a stream does.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Union

from ._transport import Canceller, set_canceller
from .client import Command, CommandStream, Computer, Ohm, Process, Shell, Watch, DEFAULT_DISK_SIZE_MB
from .models import CommandResult, Event, FileInfo, FileList, Port

_STOP = object()


def _close_result(f) -> None:
    """Closes what a cancelled call returned after all (a stream, a shell)."""
    if f.cancelled() or f.exception() is not None:
        return
    close = getattr(f.result(), "close", None)
    if callable(close):
        close()


class AsyncOhm:
    """An asyncio client of one Ohm daemon; arguments as :class:`ohm.Ohm`.
    ``max_concurrency`` bounds the calls and streams waiting at once. Use it
    as ``async with AsyncOhm() as ohm:`` or call :meth:`aclose`."""

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, *, max_concurrency: int = 64, **kwargs):
        self.sync = Ohm(url, token, **kwargs)
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="ohm-async")
        self.computers = AsyncComputers(self)

    def __repr__(self) -> str:
        return "AsyncOhm(%r)" % self.sync._t.where

    async def _call(self, fn: Callable, *args, **kwargs):
        """Runs fn in the pool. A cancelled call cuts the connections fn
        opened (wherever it was: connecting, waiting for the answer,
        reading it) and closes what it returns anyway."""
        cancel = Canceller()

        def work():
            set_canceller(cancel)
            try:
                return fn(*args, **kwargs)
            finally:
                set_canceller(None)

        cf = self._pool.submit(work)
        try:
            return await asyncio.wrap_future(cf)
        except asyncio.CancelledError:
            cancel.cancel()
            cf.add_done_callback(_close_result)
            raise

    async def health(self) -> None:
        await self._call(self.sync.health)

    async def metrics(self) -> str:
        return await self._call(self.sync.metrics)

    async def openapi(self) -> Dict[str, Any]:
        return await self._call(self.sync.openapi)

    def computer(self, name: str) -> "AsyncComputer":
        return AsyncComputer(self, self.sync.computer(name))

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()


class AsyncComputers:
    """``ohm.computers`` of an :class:`AsyncOhm`."""

    def __init__(self, ohm: AsyncOhm):
        self._ohm = ohm

    async def create(self, name: Optional[str] = None, *, disk_size_mb: int = DEFAULT_DISK_SIZE_MB, **kwargs) -> "AsyncComputer":
        c = await self._ohm._call(self._ohm.sync.computers.create, name, disk_size_mb=disk_size_mb, **kwargs)
        return AsyncComputer(self._ohm, c)

    async def list(self) -> List["AsyncComputer"]:
        return [AsyncComputer(self._ohm, c) for c in await self._ohm._call(self._ohm.sync.computers.list)]

    async def get(self, name: str) -> "AsyncComputer":
        return AsyncComputer(self._ohm, await self._ohm._call(self._ohm.sync.computers.get, name))

    async def delete(self, name: str) -> None:
        await self._ohm._call(self._ohm.sync.computers.delete, name)


class AsyncComputer:
    """A computer of an :class:`AsyncOhm`; its attributes are those of
    :class:`ohm.Computer`."""

    def __init__(self, ohm: AsyncOhm, computer: Computer):
        self._ohm = ohm
        self.sync = computer
        self.files = AsyncFiles(ohm, computer)

    def __getattr__(self, name: str):
        # The last known state (name, state, disk_size_mb, ...).
        return getattr(self.__dict__["sync"], name)

    def __repr__(self) -> str:
        return "<AsyncComputer %s %s>" % (self.sync.name, self.sync.state)

    async def refresh(self) -> "AsyncComputer":
        await self._ohm._call(self.sync.refresh)
        return self

    async def start(self) -> "AsyncComputer":
        await self._ohm._call(self.sync.start)
        return self

    async def stop(self) -> "AsyncComputer":
        await self._ohm._call(self.sync.stop)
        return self

    async def set(self, **kwargs) -> "AsyncComputer":
        """As :meth:`ohm.Computer.set`."""
        await self._ohm._call(self.sync.set, **kwargs)
        return self

    async def delete(self) -> None:
        await self._ohm._call(self.sync.delete)

    async def checkpoint(self, label: str = ""):
        return await self._ohm._call(self.sync.checkpoint, label)

    async def checkpoints(self):
        return await self._ohm._call(self.sync.checkpoints)

    async def delete_checkpoint(self, id: str) -> None:
        await self._ohm._call(self.sync.delete_checkpoint, id)

    async def restore(self, checkpoint: str) -> "AsyncComputer":
        await self._ohm._call(self.sync.restore, checkpoint)
        return self

    async def fork(self, name: Optional[str] = None, checkpoint: Optional[str] = None) -> "AsyncComputer":
        return AsyncComputer(self._ohm, await self._ohm._call(self.sync.fork, name, checkpoint))

    async def resize(self, disk_size_mb: int) -> "AsyncComputer":
        """As :meth:`ohm.Computer.resize`."""
        await self._ohm._call(self.sync.resize, disk_size_mb)
        return self

    async def expose(self, port: int, *, public: bool = False) -> Port:
        """As :meth:`ohm.Computer.expose`."""
        return await self._ohm._call(self.sync.expose, port, public=public)

    async def ports(self) -> List[Port]:
        return await self._ohm._call(self.sync.ports)

    async def unexpose(self, port: int) -> Port:
        return await self._ohm._call(self.sync.unexpose, port)

    async def watch(self, path: Optional[str] = None) -> "AsyncWatch":
        """As :meth:`ohm.Computer.watch`: ``async with await c.watch() as
        w: async for ev in w``. Cancelling a task waiting on the next
        event ends the watch."""
        return AsyncWatch(self._ohm, await self._ohm._call(self.sync.watch, path))

    async def run(self, command: Command, *, check: bool = False, input: Union[bytes, str, None] = None, **kwargs) -> CommandResult:
        """As :meth:`ohm.Computer.run`; cancelling the task kills the command."""
        if input is not None:
            async with await self.shell(command, tty=False, **kwargs) as sh:
                data = input.encode() if isinstance(input, str) else bytes(input)
                if data:
                    await sh.send(data)
                await sh.close_stdin()
                result = await sh.collect()
        else:
            async with await self.run_stream(command, **kwargs) as s:
                result = await s.collect()
        return result.check() if check else result

    async def run_stream(self, command: Command, **kwargs) -> "AsyncCommandStream":
        """As :meth:`ohm.Computer.run_stream`: ``async for ev in ...``."""
        return AsyncCommandStream(self._ohm, await self._ohm._call(self.sync.run_stream, command, **kwargs))

    async def run_background(self, command: Command, **kwargs) -> "AsyncProcess":
        return AsyncProcess(self._ohm, await self._ohm._call(self.sync.run_background, command, **kwargs))

    async def processes(self) -> List["AsyncProcess"]:
        return [AsyncProcess(self._ohm, p) for p in await self._ohm._call(self.sync.processes)]

    async def process(self, id: str) -> "AsyncProcess":
        return AsyncProcess(self._ohm, await self._ohm._call(self.sync.process, id))

    async def shell(self, command: Optional[Command] = None, **kwargs) -> "AsyncShell":
        return AsyncShell(self._ohm, await self._ohm._call(self.sync.shell, command, **kwargs))


class _AsyncStream:
    """What the async forms of the sync streams share: ``async for``
    over the sync stream's iterator in a worker thread, the stream closed
    when a wait is cancelled, and ``aclose``/``async with``."""

    def __init__(self, ohm: AsyncOhm, stream):
        self._ohm = ohm
        self.sync = stream

    async def _guard(self, fn, *args):
        try:
            return await self._ohm._call(fn, *args)
        except asyncio.CancelledError:
            self.sync.close()
            raise

    def __aiter__(self):
        return self

    async def __anext__(self):
        ev = await self._guard(next, self.sync._it, _STOP)
        if ev is _STOP:
            raise StopAsyncIteration
        return ev

    async def aclose(self) -> None:
        self.sync.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.sync.close()


class AsyncCommandStream(_AsyncStream):
    """A command's output as it comes: ``async for ev in stream``."""

    sync: CommandStream

    @property
    def exit_code(self) -> Optional[int]:
        return self.sync.exit_code

    async def collect(self) -> CommandResult:
        return await self._guard(self.sync.collect)


class AsyncWatch(_AsyncStream):
    """The changes under a path of a computer's workspace as they come:
    ``async for ev in watch`` (:class:`ohm.WatchEvent` s, the last one
    ``"ended"``); ``path`` and ``reason`` as :class:`ohm.Watch`. Closing
    it (``aclose``, ``close``, leaving ``async with``) ends the watch and
    the loop."""

    sync: Watch

    @property
    def path(self) -> str:
        return self.sync.path

    @property
    def reason(self) -> Optional[str]:
        return self.sync.reason

    def close(self) -> None:
        """Ends the watch; safe while another task waits on the next event."""
        self.sync.close()


class AsyncProcess:
    """A background process of an :class:`AsyncOhm`; attributes as
    :class:`ohm.Process`."""

    def __init__(self, ohm: AsyncOhm, process: Process):
        self._ohm = ohm
        self.sync = process

    def __getattr__(self, name: str):
        return getattr(self.__dict__["sync"], name)

    def __repr__(self) -> str:
        return repr(self.sync)

    async def refresh(self) -> "AsyncProcess":
        await self._ohm._call(self.sync.refresh)
        return self

    async def attach(self) -> AsyncCommandStream:
        return AsyncCommandStream(self._ohm, await self._ohm._call(self.sync.attach))

    async def wait(self) -> CommandResult:
        async with await self.attach() as s:
            res = await s.collect()
        await self.refresh()
        return res

    async def kill(self) -> "AsyncProcess":
        await self._ohm._call(self.sync.kill)
        return self

    async def connect(self) -> "AsyncShell":
        return AsyncShell(self._ohm, await self._ohm._call(self.sync.connect))


class AsyncShell:
    """An interactive session of an :class:`AsyncOhm`; methods as
    :class:`ohm.Shell`, awaited."""

    def __init__(self, ohm: AsyncOhm, shell: Shell):
        self._ohm = ohm
        self.sync = shell

    @property
    def process(self) -> Optional[AsyncProcess]:
        p = self.sync.process
        return AsyncProcess(self._ohm, p) if p is not None else None

    @property
    def exit_code(self) -> Optional[int]:
        return self.sync.exit_code

    async def _guard(self, fn, *args, **kwargs):
        try:
            return await self._ohm._call(fn, *args, **kwargs)
        except asyncio.CancelledError:
            self.sync.close()
            raise

    async def send(self, data: Union[bytes, str]) -> None:
        await self._ohm._call(self.sync.send, data)

    async def resize(self, rows: int, cols: int) -> None:
        await self._ohm._call(self.sync.resize, rows, cols)

    async def close_stdin(self) -> None:
        await self._ohm._call(self.sync.close_stdin)

    async def read(self, timeout: Optional[float] = None) -> bytes:
        return await self._guard(self.sync.read, timeout)

    async def read_until(self, marker: Union[bytes, str], timeout: Optional[float] = 30) -> bytes:
        return await self._guard(self.sync.read_until, marker, timeout)

    async def wait(self, timeout: Optional[float] = None) -> int:
        return await self._guard(self.sync.wait, timeout)

    async def collect(self) -> CommandResult:
        return await self._guard(self.sync.collect)

    def __aiter__(self):
        self._it = iter(self.sync)
        return self

    async def __anext__(self) -> Event:
        ev = await self._guard(next, self._it, _STOP)
        if ev is _STOP:
            raise StopAsyncIteration
        return ev

    async def close(self) -> None:
        await self._ohm._call(self.sync.close)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


class AsyncFiles:
    """``computer.files`` of an :class:`AsyncOhm`; methods as
    :class:`ohm.Files`, awaited."""

    def __init__(self, ohm: AsyncOhm, computer: Computer):
        self._ohm = ohm
        self.sync = computer.files

    async def write(self, path: str, data, **kw) -> int:
        return await self._ohm._call(self.sync.write, path, data, **kw)

    async def read(self, path: str, **kw) -> bytes:
        return await self._ohm._call(self.sync.read, path, **kw)

    async def read_text(self, path: str, **kw) -> str:
        return await self._ohm._call(self.sync.read_text, path, **kw)

    async def upload(self, local_path: str, path: str, **kw) -> int:
        return await self._ohm._call(self.sync.upload, local_path, path, **kw)

    async def download(self, path: str, local_path: str, **kw) -> None:
        await self._ohm._call(self.sync.download, path, local_path, **kw)

    async def upload_dir(self, local_dir: str, path: str, **kw) -> None:
        await self._ohm._call(self.sync.upload_dir, local_dir, path, **kw)

    async def download_dir(self, path: str, local_dir: str, **kw) -> None:
        await self._ohm._call(self.sync.download_dir, path, local_dir, **kw)

    async def stat(self, path: str, **kw) -> FileInfo:
        return await self._ohm._call(self.sync.stat, path, **kw)

    async def list(self, path: str, **kw) -> FileList:
        return await self._ohm._call(self.sync.list, path, **kw)

    async def exists(self, path: str, **kw) -> bool:
        return await self._ohm._call(self.sync.exists, path, **kw)
