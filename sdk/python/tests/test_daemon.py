"""The SDK against a real daemon, over its Unix socket and over TCP with a
token: real computers created, run in, copied to and from, and deleted.

tests/sdk (Go, in `make test`) starts `ohm serve` and runs this with
OHM_TEST_SOCKET, OHM_TEST_URL and OHM_TEST_TOKEN set; without them it
skips. OHM_TEST_TEMPLATE picks the template (default minimal, the fastest
to start). Each class creates one computer and its tests share it; the
last test (test_z_*) stops, starts and deletes it.
"""

import asyncio
import os
import shutil
import tempfile
import threading
import time
import unittest
import uuid

import ohm

SOCKET = os.environ.get("OHM_TEST_SOCKET")
URL = os.environ.get("OHM_TEST_URL")
TOKEN = os.environ.get("OHM_TEST_TOKEN")
TEMPLATE = os.environ.get("OHM_TEST_TEMPLATE", "minimal")


def _write(path, data, mode="w"):
    with open(path, mode) as f:
        f.write(data)


def _read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def _name(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:6])


class _Scenario:
    """The tests every transport runs; subclasses say how to connect."""

    prefix = "py"

    @classmethod
    def client(cls):
        raise NotImplementedError

    @classmethod
    def setUpClass(cls):
        cls.ohm = cls.client()
        lines = []
        cls.c = cls.ohm.computers.create(_name(cls.prefix), template=TEMPLATE, disk_size_mb=256, env={"GREETING": "hi"}, on_progress=lines.append)
        cls.created = cls.c.info  # as create answered (tests before test_created restore and stop it)
        cls.tmp = tempfile.mkdtemp()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        try:
            cls.ohm.computers.delete(cls.c.name)
        except ohm.NotFound:
            pass

    def test_created(self):
        self.assertEqual(self.c.state, "running")
        self.assertEqual(self.c.template, TEMPLATE)
        names = [c.name for c in self.ohm.computers.list()]
        self.assertIn(self.c.name, names)
        got = self.ohm.computers.get(self.c.name)
        self.assertEqual(got.disk_size_mb, 256)
        self.assertIsNotNone(got.disk)
        self.assertIsNotNone(got.limits)
        self.assertGreater(got.disk.size_bytes, 0)
        self.assertEqual(got.workspace.layout, "block")
        self.assertEqual(self.created.stop_reason, "")
        self.assertEqual(got.state, "running")
        self.assertEqual(got.stop_reason, "")  # running, even after a restore: no stop reason

    def test_set(self):
        self.assertEqual(self.c.idle_timeout_seconds, 1800)  # the daemon's default
        self.c.set(idle_timeout=7200)
        self.assertEqual(self.c.idle_timeout_seconds, 7200)
        with self.assertRaises(ohm.BadRequest):
            self.c.set(idle_timeout=-1)
        self.assertEqual(self.ohm.computers.get(self.c.name).idle_timeout_seconds, 7200)

    def test_run(self):
        r = self.c.run("echo out; echo err >&2; echo $GREETING; exit 3")
        self.assertEqual((r.exit_code, r.stdout, r.stderr), (3, "out\nhi\n", "err\n"))
        self.assertFalse(r.ok)
        with self.assertRaises(ohm.CommandFailed) as cm:
            self.c.run("echo boom >&2; exit 4", check=True)
        self.assertEqual(cm.exception.exit_code, 4)
        self.assertIn("boom", str(cm.exception))
        r = self.c.run(["printf", "%s|", "a b", "c"], workdir="/tmp", env={"X": "1"})
        self.assertEqual(r.stdout, "a b|c|")
        self.assertEqual(self.c.run("id -un", user="root").stdout.strip(), "root")
        self.assertEqual(self.c.run("cat", input=b"piped\x00bytes").stdout_bytes, b"piped\x00bytes")
        r = self.c.run("printf '\\377\\376'")
        self.assertEqual(r.stdout_bytes, b"\xff\xfe")

    def test_run_stream(self):
        events = []
        with self.c.run_stream("echo one; sleep 0.2; echo two >&2; exit 5") as s:
            for ev in s:
                events.append(ev)
        kinds = [(e.kind, e.data) for e in events if e.kind != "exit"]
        self.assertEqual(kinds, [("stdout", b"one\n"), ("stderr", b"two\n")])
        self.assertEqual(events[-1].kind, "exit")
        self.assertEqual(events[-1].exit_code, 5)
        self.assertEqual(s.exit_code, 5)

    def test_stream_close_kills(self):
        s = self.c.run_stream("echo up; exec sleep 1001")
        ev = next(iter(s))
        self.assertEqual(ev.data, b"up\n")
        s.close()
        self._eventually(lambda: "sleep 1001" not in self._ps(), "the command to die with its stream")

    def _ps(self):
        """The computer's live (not zombie) processes."""
        return self.c.run("ps -o stat=,args= | grep -v '^Z'").stdout

    def _eventually(self, cond, what, timeout=20):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                self.fail("timed out waiting for " + what)
            time.sleep(0.1)

    def test_errors(self):
        with self.assertRaises(ohm.NotFound) as cm:
            self.ohm.computers.get("no-such-computer")
        self.assertIn("no-such-computer", str(cm.exception))
        with self.assertRaises(ohm.AlreadyExists):
            self.ohm.computers.create(self.c.name, template=TEMPLATE, disk_size_mb=256)
        with self.assertRaises(ohm.WrongState):
            self.c.start()
        with self.assertRaises(ohm.BadRequest):
            self.ohm.computers.create("Bad_Name", template=TEMPLATE, disk_size_mb=256)
        with self.assertRaises(ohm.BadRequest):
            self.c.run("true", workdir="relative")
        with self.assertRaises(ohm.NotFound):
            self.c.files.read("/home/ohm/missing")
        with self.assertRaises(ohm.NotFound):
            self.ohm.computer("ghost").run("true")
        with self.assertRaises(ohm.NotFound):
            self.ohm.computer("ghost").shell("true")

    def test_files(self):
        f = self.c.files
        self.assertEqual(f.write("/home/ohm/a.txt", b"hi"), 2)
        self.assertEqual(f.read("/home/ohm/a.txt"), b"hi")
        f.write("/home/ohm/t.txt", "text ✓")
        self.assertEqual(f.read_text("/home/ohm/t.txt"), "text ✓")
        blob = os.urandom(3 << 20)
        local = os.path.join(self.tmp, "blob")
        with open(local, "wb") as fh:
            fh.write(blob)
        self.assertEqual(f.upload(local, "/home/ohm/blob"), len(blob))
        back = os.path.join(self.tmp, "blob.back")
        f.download("/home/ohm/blob", back)
        self.assertEqual(_read(back, "rb"), blob)
        st = f.stat("/home/ohm/a.txt")
        self.assertEqual((st.type, st.size, st.name), ("file", 2, "a.txt"))
        self.assertTrue(f.exists("/home/ohm/a.txt"))
        self.assertFalse(f.exists("/home/ohm/nope"))
        listing = f.list("/home/ohm")
        names = [e.name for e in listing]
        self.assertIn("a.txt", names)
        self.assertEqual(names, sorted(names))
        self.assertFalse(listing.truncated)
        one = f.list("/home/ohm", limit=1)
        self.assertEqual(len(one), 1)
        self.assertTrue(one.truncated, "a listing cut at its limit must say so")

    def test_dirs(self):
        src = os.path.join(self.tmp, "repo")
        os.makedirs(os.path.join(src, "sub", "deep"))
        _write(os.path.join(src, "README"), "readme\n")
        _write(os.path.join(src, "sub", "deep", "x.bin"), b"\x00\x01" * 50000, "wb")
        os.chmod(os.path.join(src, "README"), 0o755)
        os.symlink("sub/deep/x.bin", os.path.join(src, "link"))
        self.c.files.upload_dir(src, "/home/ohm/repo")
        r = self.c.run("cd /home/ohm/repo && cat README && readlink link && wc -c < sub/deep/x.bin && stat -c %a README")
        self.assertEqual(r.stdout.split(), ["readme", "sub/deep/x.bin", "100000", "755"])
        self.c.run("echo made-inside > /home/ohm/repo/sub/new.txt", check=True)
        dst = os.path.join(self.tmp, "repo.back")
        self.c.files.download_dir("/home/ohm/repo", dst)
        self.assertEqual(_read(os.path.join(dst, "sub", "new.txt")), "made-inside\n")
        self.assertEqual(_read(os.path.join(dst, "sub", "deep", "x.bin"), "rb"), b"\x00\x01" * 50000)
        self.assertEqual(os.readlink(os.path.join(dst, "link")), "sub/deep/x.bin")
        self.assertEqual(os.stat(os.path.join(dst, "README")).st_mode & 0o777, 0o755)

    def test_background(self):
        p = self.c.run_background("echo started; echo oops >&2; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo finished; exit 4")
        self.assertEqual(p.state, "running")
        self.assertIn(p.id, [q.id for q in self.c.processes()])
        self.assertEqual(self.c.process(p.id).state, "running")
        self.c.run("touch /tmp/go", check=True)
        res = p.wait()
        self.assertEqual((res.exit_code, res.stdout, res.stderr), (4, "started\nfinished\n", "oops\n"))
        self.assertEqual((p.state, p.exit_code), ("exited", 4))
        with p.attach() as s:
            self.assertEqual([e.kind for e in s][-1], "exit")
        long = self.c.run_background(["sleep", "1002"])
        long.kill()
        with self.assertRaises(ohm.NotFound):
            self.c.process(long.id)
        self._eventually(lambda: "sleep 1002" not in self._ps(), "the killed process to be gone")

    def test_shell(self):
        with self.c.shell(rows=30, cols=100) as sh:
            sh.send("stty size; echo $((6*7))-marker\n")
            out = sh.read_until("42-marker", timeout=30)
            self.assertIn(b"30 100", out)
            sh.resize(40, 120)
            sh.send("stty size\n")
            self.assertIn(b"40 120", sh.read_until("40 120", timeout=30))
            sh.send("exit 7\n")
            self.assertEqual(sh.wait(timeout=30), 7)
        # Without a PTY, stdout and stderr stay apart and stdin ends.
        with self.c.shell("cat; echo done >&2", tty=False) as sh:
            sh.send(b"abc")
            sh.close_stdin()
            res = sh.collect()
        self.assertEqual((res.stdout, res.stderr, res.exit_code), ("abc", "done\n", 0))

    def test_shell_background(self):
        with self.c.shell("read line; echo got $line; sleep 0.3; exit 2", tty=False, background=True) as sh:
            self.assertIsNotNone(sh.process)
            pid = sh.process.id
        # Left: it still runs; come back and give it its input.
        p = self.c.process(pid)
        self.assertEqual(p.state, "running")
        with p.connect() as sh:
            sh.send("again\n")
            self.assertIn(b"got again", sh.read_until("got again", timeout=30))
            self.assertEqual(sh.wait(timeout=30), 2)

    def test_async(self):
        async def scenario():
            async with ohm.AsyncOhm(**self.connect_args()) as a:
                c = await a.computers.get(self.c.name)
                self.assertEqual(c.name, self.c.name)
                results = await asyncio.gather(*(c.run("echo %d; exit %d" % (i, i)) for i in range(5)))
                self.assertEqual([(r.stdout, r.exit_code) for r in results], [("%d\n" % i, i) for i in range(5)])
                seen = []
                async with await c.run_stream("echo a; sleep 0.2; echo b >&2") as s:
                    async for ev in s:
                        seen.append(ev.kind)
                self.assertEqual(seen, ["stdout", "stderr", "exit"])
                await c.files.write("/home/ohm/async.txt", b"async")
                self.assertEqual(await c.files.read("/home/ohm/async.txt"), b"async")
                p = await c.run_background("sleep 0.2; echo bg")
                self.assertEqual((await p.wait()).stdout, "bg\n")
                async with await c.shell(rows=10, cols=50) as sh:
                    await sh.send("stty size\n")
                    self.assertIn(b"10 50", await sh.read_until("10 50"))
                self.assertEqual((await c.expose(4000)).port, 4000)
                self.assertEqual([p.port for p in await c.ports()], [4000])
                self.assertEqual((await c.unexpose(4000)).port, 4000)
                async with await c.watch("/home/ohm/aw") as w:
                    self.assertEqual(w.path, "/home/ohm/aw")
                    await c.run("mkdir -p /home/ohm/aw && touch /home/ohm/aw/f", check=True)

                    async def created():
                        async for ev in w:
                            if ev.path == "/home/ohm/aw/f":
                                return ev

                    self.assertEqual((await asyncio.wait_for(created(), 60)).type, "created")
                # Cancelling a run kills its command.
                task = asyncio.ensure_future(c.run("echo x > /tmp/cancel-started; exec sleep 1003"))
                while not await c.files.exists("/tmp/cancel-started"):
                    await asyncio.sleep(0.05)
                task.cancel()
                with self.assertRaises(asyncio.CancelledError):
                    await task
                deadline = time.monotonic() + 20
                while "sleep 1003" in (await c.run("ps -o stat=,args= | grep -v '^Z'")).stdout:
                    self.assertLess(time.monotonic(), deadline, "a cancelled run kept running")
                    await asyncio.sleep(0.1)
                with self.assertRaises(ohm.NotFound):
                    await a.computers.get("no-such-computer")

        asyncio.run(scenario())

    def test_checkpoint_restore_fork(self):
        self.c.run("echo one > /home/ohm/ck && sync", check=True)
        ck = self.c.checkpoint("before")
        self.assertEqual(ck.label, "before")
        self.assertIn("workspace.img", ck.disks)
        self.assertIn(ck.id, [x.id for x in self.c.checkpoints()])
        self.c.run("echo two > /home/ohm/ck && sync", check=True)
        with self.assertRaises(ohm.NotFound):
            self.c.restore("nope")
        self.c.restore(ck.id)
        self.assertEqual(self.c.state, "running")
        self.assertEqual(self.c.run("cat /home/ohm/ck", check=True).stdout, "one\n")
        fork = self.c.fork(name=_name(self.prefix + "-fork"), checkpoint=ck.id)
        try:
            self.assertEqual(fork.state, "running")
            self.assertEqual(fork.run("cat /home/ohm/ck", check=True).stdout, "one\n")
        finally:
            fork.delete()
        self.c.delete_checkpoint(ck.id)
        self.assertNotIn(ck.id, [x.id for x in self.c.checkpoints()])

    def test_resize(self):
        try:
            self.c.resize(320)
        except ohm.WrongState as e:
            # This host cannot grow a mounted ext4 (no CAP_SYS_RESOURCE):
            # the size is recorded and the disk grows at the next start.
            self.assertIn("CAP_SYS_RESOURCE", str(e))
            self.c.stop()
            self.c.start()
        else:
            self.assertEqual(self.c.disk_size_mb, 320)
        got = self.ohm.computers.get(self.c.name)
        self.assertEqual(got.disk_size_mb, 320)
        self.assertEqual(got.disk.size_bytes, 320 << 20)
        with self.assertRaises(ohm.BadRequest) as cm:
            self.c.resize(256)
        self.assertIn("shrink", str(cm.exception))
        with self.assertRaises(ohm.NotFound):
            self.ohm.computer("ghost").resize(512)

    def test_ports(self):
        self.assertEqual(self.c.ports(), [])
        # Nothing needs to listen on a port to expose it (a request would
        # then answer 502).
        p = self.c.expose(3000)
        self.assertEqual((p.port, p.public), (3000, False))
        self.assertIsNotNone(p.created_at)
        # The daemon serves TCP, so the URL is there whichever way this client came.
        self.assertTrue(p.url.startswith("http://3000-%s.localhost:" % self.c.name), p.url)
        self.assertIn("ohm_token=", p.url)
        pub = self.c.expose(3000, public=True)
        self.assertTrue(pub.public)
        self.assertNotIn("ohm_token", pub.url)
        self.c.expose(8080)
        self.assertEqual(sorted((x.port, x.public) for x in self.c.ports()), [(3000, True), (8080, False)])
        self.assertEqual(self.c.unexpose(3000).port, 3000)
        self.assertEqual([x.port for x in self.c.ports()], [8080])
        self.c.unexpose(8080)
        self.assertEqual(self.c.ports(), [])
        with self.assertRaises(ohm.NotFound):
            self.c.unexpose(3000)
        with self.assertRaises(ohm.BadRequest):
            self.c.expose(0)
        with self.assertRaises(ohm.NotFound):
            self.ohm.computer("ghost").ports()

    def test_watch(self):
        with self.assertRaises(ohm.BadRequest):
            self.c.watch("/etc")
        with self.assertRaises(ohm.NotFound):
            self.ohm.computer("ghost").watch()
        with self.c.watch("/home/ohm/watched") as w:
            self.assertEqual(w.path, "/home/ohm/watched")
            guard = threading.Timer(60, w.close)  # a watch that never sees it ends
            guard.start()
            try:
                self.c.run("mkdir -p /home/ohm/watched && echo hi > /home/ohm/watched/new.txt && touch /home/ohm/elsewhere", check=True)
                seen = []
                for ev in w:
                    seen.append(ev)
                    if ev.path == "/home/ohm/watched/new.txt":
                        break
            finally:
                guard.cancel()
        self.assertIn(ohm.WatchEvent("created", "/home/ohm/watched/new.txt"), seen)
        self.assertNotIn("/home/ohm/elsewhere", [e.path for e in seen])
        self.assertEqual(list(w), [], "a closed watch has no more events")

    def test_z_lifecycle(self):
        self.c.files.write("/home/ohm/keep.txt", "durable")
        w = self.c.watch()
        guard = threading.Timer(60, w.close)
        guard.start()
        self.assertEqual(self.c.stop().state, "stopped")
        try:
            evs = list(w)
        finally:
            guard.cancel()
        self.assertEqual(evs[-1].type, "ended", evs)
        self.assertIn("stopped", w.reason)
        with self.assertRaises(ohm.WrongState):
            self.c.watch()
        self.assertEqual(self.ohm.computers.get(self.c.name).state, "stopped")
        self.assertEqual(self.c.start().state, "running")
        self.assertEqual(self.c.files.read("/home/ohm/keep.txt"), b"durable")
        self.c.stop()
        # run starts a stopped computer.
        self.assertEqual(self.c.run("cat /home/ohm/keep.txt").stdout, "durable")
        self.c.delete()
        with self.assertRaises(ohm.NotFound):
            self.ohm.computers.get(self.c.name)


@unittest.skipUnless(SOCKET, "OHM_TEST_SOCKET is not set (tests/sdk sets it)")
class UnixSocketTest(_Scenario, unittest.TestCase):
    prefix = "pyunix"

    @classmethod
    def connect_args(cls):
        return {"socket": SOCKET}

    @classmethod
    def client(cls):
        return ohm.Ohm(**cls.connect_args())

    def test_health_metrics_openapi(self):
        self.ohm.health()
        self.assertIn("ohm_computers", self.ohm.metrics())
        self.assertEqual(self.ohm.openapi()["openapi"], "3.1.0")


@unittest.skipUnless(URL and TOKEN, "OHM_TEST_URL and OHM_TEST_TOKEN are not set (tests/sdk sets them)")
class TCPTest(_Scenario, unittest.TestCase):
    prefix = "pytcp"

    @classmethod
    def connect_args(cls):
        return {"url": URL, "token": TOKEN}

    @classmethod
    def client(cls):
        return ohm.Ohm(**cls.connect_args())

    def test_wrong_token(self):
        bad = ohm.Ohm(url=URL, token="wrong-token-wrong-token-wrong-token")
        with self.assertRaises(ohm.Unauthorized):
            bad.computers.list()
        with self.assertRaises(ohm.Unauthorized):
            bad.computer(self.c.name).shell("true")

    def test_environment(self):
        env = dict(os.environ)
        try:
            os.environ["OHM_URL"], os.environ["OHM_TOKEN"] = URL, TOKEN
            self.assertIn(self.c.name, [c.name for c in ohm.Ohm().computers.list()])
        finally:
            os.environ.clear()
            os.environ.update(env)


if __name__ == "__main__":
    unittest.main()
