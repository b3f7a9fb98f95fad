"""Post-copy migration over a real TCP link between two network namespaces shaped to 100 Mbit/s:
the job resumes on the target from a minimal checkpoint and its memory follows from the
source's page server. Also the page protocol on both sides, dropped connections and a
source that dies."""

import json
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import HEXO, ROOT, UHYVE, needs_kvm, run
from netlink import ShapedLink
from test_checkpoint import _wait_running

from uhyve_ctl import pagewire as wire
from uhyve_ctl.pager import PageLink, SourceLost
from uhyve_ctl.pageserver import PageServer
from uhyve_ctl.pagewire import PAGE_SIZE, ProtocolError, Refused, Run

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
TOUCH = ROOT / "tests" / "programs" / "touch_memory.c"
SERVED = re.compile(r"served (\d+) of (\d+) pages")


@pytest.fixture(scope="module")
def link():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    with ShapedLink(f"hxpc{os.getpid()}", os.getpid() % 250 + 1) as shaped:
        yield shaped


@pytest.fixture
def env(tmp_path):
    (tmp_path / "run").mkdir(mode=0o700)
    return dict(os.environ, HEXO_RUN_DIR=str(tmp_path / "run"))


@pytest.fixture(scope="module")
def touch(tmp_path_factory):
    out = tmp_path_factory.mktemp("touch") / "touch.hexo"
    p = run([HEXO, "build", TOUCH, "--migratable", "-o", out])
    assert p.returncode == 0, p.stderr
    return out


def _state(env, name):
    with open(os.path.join(env["HEXO_RUN_DIR"], f"{name}.json")) as f:
        return json.load(f)


def _start_source(link, env, image, isa, args=(), backend="auto"):
    proc = subprocess.Popen(link.in_src([UHYVE, "run", image, "--isa", isa, "--backend", backend,
                                         "--name", "src", "--", *args]),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_running(env, "src", proc)
    return proc


def _migrate(link, env, out, to):
    ck = run([UHYVE, "migrate", "src", "--to", to, "--mode", "postcopy", "--serve",
              f"{link.src_ip}:0", "-o", out], env=env)
    assert ck.returncode == 0, ck.stderr
    assert "minimal checkpoint" in ck.stdout
    return ck


def _restore(link, env, out, *opts, name="dst"):
    """x86-64 targets run on KVM (userfaultfd), arm64 ones on the emulated board (hooks)."""
    cmd = [UHYVE, "restore", out, "--stats", "--name", name, *opts]
    return run(link.in_dst(cmd), env=env, timeout=300)


def _hypercalls(stats: str) -> int:
    return int(re.search(r"(\d+) hypercalls", stats)[1])


def _source_finished(proc):
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    m = SERVED.search(err)
    assert m, err
    return out, int(m[1]), int(m[2])


@needs_root
@pytest.mark.parametrize("kernel,klass,src,dst,delay,backend", [
    ("ep", "S", "x86_64", "aarch64", 0.6, "auto"),
    pytest.param("ep", "S", "aarch64", "x86_64", 0.5, "auto", marks=needs_kvm),
    ("is", "S", "x86_64", "aarch64", 0.0, "emu"),
    pytest.param("is", "W", "aarch64", "x86_64", 0.3, "auto", marks=needs_kvm),
    ("cg", "W", "x86_64", "aarch64", 0.05, "emu"),    # on KVM CG.W could end first
    pytest.param("cg", "S", "aarch64", "x86_64", 0.3, "auto", marks=needs_kvm),
    ("cg", "S", "aarch64", "aarch64", 0.3, "auto"),
])
def test_npb_migrated_in_postcopy_verifies(link, images, env, tmp_path, kernel, klass, src, dst,
                                           delay, backend):
    from npb_reference import check
    image = images.get(f"npb-{kernel}", klass)
    plain = run([UHYVE, "run", image, "--stats"])
    assert plain.returncode == 0, plain.stderr
    source = _start_source(link, env, image, src, backend=backend)
    time.sleep(delay)
    _migrate(link, env, tmp_path / "ck", dst)
    assert _state(env, "src")["migration"] == "serving"
    p = _restore(link, env, tmp_path / "ck")
    src_out, served, total = _source_finished(source)
    assert p.returncode == 0, p.stderr
    assert "Verification" not in src_out
    check(kernel, klass, src_out + p.stdout)
    assert 0 < served <= total                # a short job may end before the puller does
    # The rest of the job makes its own hypercalls and one at the confirming migration point:
    # fetching pages, on a fault or for a hypercall's buffer, is not the guest's business.
    assert _hypercalls(p.stderr) <= _hypercalls(plain.stderr) + 1
    assert _state(env, "src")["state"] == "migrated"
    assert _state(env, "src")["migration"] == "done"
    assert _state(env, "dst")["migration"] == "done"


@needs_root
@pytest.mark.parametrize("src,dst", [("x86_64", "aarch64"),
                                     pytest.param("aarch64", "x86_64", marks=needs_kvm)])
def test_a_job_that_needs_part_of_its_memory_transfers_less(link, env, tmp_path, touch, src,
                                                            dst):
    reference = run([UHYVE, "run", touch, "--", "16", "25", "0"])
    source = _start_source(link, env, touch, src, ("16", "25", "2.5"))
    _migrate(link, env, tmp_path / "ck", dst)
    p = _restore(link, env, tmp_path / "ck", "--prefetch-interval", "off")
    _, served, total = _source_finished(source)
    assert p.returncode == 0, p.stderr
    assert p.stdout == reference.stdout
    assert total >= 4096                      # the 16 MiB buffer is served, not inlined
    assert served < 0.3 * total
    assert f"{served} of {total} pages fetched" in p.stderr


@needs_root
def test_dropped_connections_are_resumed_without_loss(link, env, tmp_path, touch):
    reference = run([UHYVE, "run", touch, "--", "16", "100", "0"])
    source = _start_source(link, env, touch, "x86_64", ("16", "100", "2.5"))
    _migrate(link, env, tmp_path / "ck", "aarch64")     # the target pulls while it waits
    target = subprocess.Popen(link.in_dst([UHYVE, "restore", tmp_path / "ck", "--stats",
                                           "--prefetch-pages", "16", "--prefetch-interval",
                                           "20ms"]),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kills = 0
    for _ in range(3):
        time.sleep(0.7)
        ss = subprocess.run(link.in_dst(["ss", "-K", "dst", link.src_ip]), capture_output=True,
                            text=True)
        kills += ss.stdout.count("ESTAB")
    out, err = target.communicate(timeout=300)
    _, served, total = _source_finished(source)
    assert kills >= 2, "the test did not catch the transfer in flight"
    assert target.returncode == 0, err
    assert out == reference.stdout
    assert served == total and f"{total} of {total} pages fetched" in err
    assert int(re.search(r"(\d+) reconnects", err)[1]) >= 2


@needs_root
def test_source_death_stops_the_target_and_the_full_checkpoint_restarts_the_job(
        link, env, tmp_path, touch):
    reference = run([UHYVE, "run", touch, "--", "16", "100", "0"])
    source = _start_source(link, env, touch, "x86_64", ("16", "100", "3"))
    _migrate(link, env, tmp_path / "ck", "aarch64")     # the target waits before it reads
    target = subprocess.Popen(link.in_dst([UHYVE, "restore", tmp_path / "ck", "--batch", "1",
                                           "--prefetch-interval", "off", "--retry-for", "1s",
                                           "--name", "dst"]),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_running(env, "dst", target)
    assert _state(env, "dst")["migration"] == "pulling"
    for _ in range(500):
        if (tmp_path / "ck.full").exists():
            break
        time.sleep(0.01)
    source.kill()
    source.wait()
    out, err = target.communicate(timeout=120)
    assert target.returncode == 123, err
    assert "unreachable" in err and "never arrived" in err and str(tmp_path / "ck.full") in err
    assert out == ""
    again = run([UHYVE, "restore", tmp_path / "ck.full"], env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == reference.stdout


def test_a_job_whose_areas_all_fit_inline_leaves_nothing_to_serve(env, tmp_path, touch):
    """No area is big enough to be served: the checkpoint is complete, the source ends at
    once instead of waiting for a target that never needs to call, and the job resumes."""
    reference = run([UHYVE, "run", touch, "--", "0", "100", "0"])
    source = subprocess.Popen([UHYVE, "run", touch, "--name", "src", "--", "0", "100", "1.5"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_running(env, "src", source)
    ck = run([UHYVE, "migrate", "src", "--to", "aarch64", "--mode", "postcopy", "--serve",
              "127.0.0.1:0", "-o", tmp_path / "ck"], env=env)
    assert ck.returncode == 0, ck.stderr
    assert "no pages to serve" in ck.stdout and "minimal checkpoint" not in ck.stdout
    src_out, src_err = source.communicate(timeout=60)
    assert source.returncode == 0, src_err
    assert src_out == "" and "served" not in src_err
    meta = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())
    assert "postcopy" not in meta and not any(a.get("remote") for a in meta["areas"])
    p = run([UHYVE, "restore", tmp_path / "ck"], env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout == reference.stdout


def test_a_full_checkpoint_that_cannot_be_written_leaves_the_job_at_the_source(env, tmp_path,
                                                                              touch):
    """The requester is answered once the minimal checkpoint is durable; the full one is
    written while the target starts. When that write fails, no target is ever welcomed and
    the job goes on at the source, its output whole."""
    reference = run([UHYVE, "run", touch, "--", "16", "100", "0"])
    source = subprocess.Popen([UHYVE, "run", touch, "--name", "src", "--", "16", "100", "1.5"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_running(env, "src", source)
    (tmp_path / "ck.full").write_text("in the way")
    ck = run([UHYVE, "migrate", "src", "--to", "aarch64", "--mode", "postcopy", "--serve",
              "127.0.0.1:0", "-o", tmp_path / "ck"], env=env)
    assert ck.returncode == 0, ck.stderr
    target = run([UHYVE, "restore", tmp_path / "ck"], env=env, timeout=300)
    assert target.returncode == 126, target.stderr
    assert target.stdout == ""
    out, err = source.communicate(timeout=120)
    assert source.returncode == 0, err
    assert out == reference.stdout
    assert "post-copy abandoned" in err and "could not write its full checkpoint" in err
    assert not (tmp_path / "ck").exists()
    assert _state(env, "src")["migration"] == "abandoned"


def test_targets_wait_for_the_full_checkpoint_and_are_refused_if_it_fails():
    """A held server welcomes an authenticated target only at release(); after refuse() it
    turns every target away with ERROR 5."""
    for outcome in ("release", "refuse"):
        srv = PageServer(("127.0.0.1", 0), SECRET, [AREA], held=True)
        srv.start()
        link = PageLink(srv.address, SECRET, retry_for=1)
        got = []
        waiting = threading.Thread(target=lambda: got.append(_connect(link)))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not got
        getattr(srv, outcome)(*(() if outcome == "release" else ("it failed",)))
        waiting.join(30)
        if outcome == "release":
            assert got == [[Run(0x200000, 4)]]
            link.done()
        else:
            assert isinstance(got[0], Refused) and got[0].code == wire.E_RESUMED
            assert "it failed" in str(got[0])
        srv.close()


def _connect(link):
    try:
        return link.connect()
    except Refused as e:
        return e


# The page protocol, both ends, on loopback.

SECRET = b"s" * 32
AREA = (0x200000, bytes(range(256)) * 64)           # four pages


@pytest.fixture
def server():
    srv = PageServer(("127.0.0.1", 0), SECRET, [AREA])
    srv.start()
    yield srv
    srv.close()


def test_pages_are_served_and_the_server_finishes_only_when_told(server):
    link = PageLink(server.address, SECRET, retry_for=1)
    assert link.connect() == [Run(0x200000, 4)]
    assert link.fetch(Run(0x201000, 3)) == AREA[1][PAGE_SIZE:]
    assert link.fetch(Run(0x200000, 1)) == AREA[1][:PAGE_SIZE]
    assert not server.done.is_set()
    link.done()
    assert server.wait(5)
    assert server.pages_served == 4


def test_a_target_with_the_wrong_secret_is_refused(server):
    link = PageLink(server.address, b"x" * 32, retry_for=1)
    with pytest.raises(Refused, match="wrong migration secret") as e:
        link.connect()
    assert e.value.code == wire.E_AUTH
    assert server.pages_served == 0


@pytest.mark.parametrize("run_", [Run(0x1ff000, 1), Run(0x203000, 2), Run(0x200800, 1),
                                  Run(0x200000, 0), Run(0x200000, wire.MAX_RUN + 1)])
def test_requests_outside_the_announced_areas_are_refused(server, run_):
    link = PageLink(server.address, SECRET, retry_for=1)
    link.connect()
    conn = link.sock
    with pytest.raises(Refused) as e:
        link.fetch(run_)
    assert e.value.code == wire.E_RANGE
    assert link.fetch(Run(0x200000, 1)) == AREA[1][:PAGE_SIZE]
    assert link.sock is conn and link.reconnects == 0     # the same connection goes on


@pytest.mark.parametrize("payload", [b"", b"\x01"])
def test_a_malformed_error_before_authentication_is_a_protocol_error(server, payload):
    with socket.create_connection(server.address) as s:
        wire.recv(s, (wire.HELLO,))
        wire.send(s, wire.ERROR, payload)
        with pytest.raises(ProtocolError, match="malformed ERROR"):
            wire.recv(s, (wire.WELCOME,))
    with socket.create_connection(server.address) as s:     # the source still serves
        assert wire.recv(s, (wire.HELLO,))[0] == wire.HELLO


def test_the_source_refuses_another_major_version(server):
    with socket.create_connection(server.address) as s:
        _, hello = wire.recv(s, (wire.HELLO,))
        nonce = wire.parse_hello(hello)
        wire.send(s, wire.AUTH, wire.auth(SECRET, nonce, bytes(32), version=(2, 0)))
        with pytest.raises(Refused, match="speaks page protocol 2.0") as e:
            wire.recv(s, (wire.WELCOME,))
    assert e.value.code == wire.E_VERSION


def _fake_source(greeting):
    """A listener that sends `greeting(conn)` to its first peer: a source gone wrong."""
    sock = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = sock.accept()
        with conn:
            greeting(conn)
            time.sleep(0.5)
    threading.Thread(target=serve, daemon=True).start()
    return sock


def test_the_target_refuses_another_major_version():
    def hello_v2(conn):
        wire.send(conn, wire.HELLO, wire._HELLO.pack(wire.MAGIC, 2, 0, bytes(32)))
    with _fake_source(hello_v2) as sock:
        with pytest.raises(ProtocolError, match="source speaks page protocol 2.0") as e:
            PageLink(sock.getsockname(), SECRET, 1).connect()
    assert e.value.code == wire.E_VERSION


def test_the_target_refuses_a_source_without_the_secret():
    def impostor(conn):
        wire.send(conn, wire.HELLO, wire.hello(bytes(32)))
        _, payload = wire.recv(conn, (wire.AUTH,))
        client_nonce = wire._AUTH.unpack(payload)[3]
        wire.send(conn, wire.WELCOME, wire.welcome(b"x" * 32, bytes(32), client_nonce,
                                                   [Run(0x200000, 4)]))
    with _fake_source(impostor) as sock:
        with pytest.raises(ProtocolError, match="could not prove") as e:
            PageLink(sock.getsockname(), SECRET, 1).connect()
    assert e.value.code == wire.E_AUTH


def test_a_corrupt_page_run_is_fetched_again(server, monkeypatch):
    real, calls = wire.data_header, []

    def corrupt_once(run_, data):
        calls.append(run_)
        return real(run_, b"corrupt" if len(calls) == 1 else data)
    monkeypatch.setattr(wire, "data_header", corrupt_once)
    link = PageLink(server.address, SECRET, retry_for=2)
    assert link.fetch(Run(0x200000, 2)) == AREA[1][:2 * PAGE_SIZE]
    assert len(calls) == 2 and link.reconnects == 1


def test_an_unreachable_source_is_given_up_after_the_retry_window():
    with socket.create_server(("127.0.0.1", 0)) as sock:
        address = sock.getsockname()
    with pytest.raises(SourceLost, match="unreachable"):
        PageLink(address, SECRET, retry_for=0.5).fetch(Run(0x200000, 1))


def test_minimal_checkpoint_format_on_both_sides(tmp_path):
    """Writer: remote areas make a 2.0 checkpoint; a full one stays 1.0 with no new key.
    Reader: a remote area cannot be read from the directory, and a 3.x one is refused."""
    from hexo import checkpoint
    from hexo import abi
    state = {"image": {"path": "/x.hexo", "build_id": "0" * 32}, "isa": "aarch64",
             "target_isa": "aarch64", "mem_size": 256 << 20, "abi_version": abi.ABI_VERSION,
             "context": {"pc": 1, "sp": 2}, "kernel": {"brk": 0, "monotonic_ns": 0},
             "files": []}
    areas = [("data", 0x200000, b"d" * 70000), ("stack", 0x7ff000, b"s" * 100)]
    from uhyve_ctl.migration import served_remotely
    ck = checkpoint.write(tmp_path / "min", dict(state, postcopy={
        "protocol": [1, 0], "server": "127.0.0.1:1", "secret": "00" * 32,
        "full_checkpoint": "/x.full"}), areas, remote=served_remotely)
    assert ck.meta["version"][0] == 2
    assert (tmp_path / "min" / "checkpoint.json").stat().st_mode & 0o077 == 0
    assert [a.remote for a in ck.areas] == [True, False]
    assert not (tmp_path / "min" / "area-0.bin").exists()
    with pytest.raises(checkpoint.CheckpointError, match="page server"):
        ck.read(ck.areas[0])
    full = checkpoint.write(tmp_path / "full", state, areas)
    assert full.meta["version"][0] == 1
    assert all("remote" not in a for a in full.meta["areas"])
    meta = json.loads((tmp_path / "min" / "checkpoint.json").read_text())
    meta["version"] = [3, 0]
    meta["manifest_crc32"] = checkpoint._manifest_crc(meta)
    (tmp_path / "min" / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(checkpoint.CheckpointError, match="format 3.x is not readable"):
        checkpoint.Checkpoint(tmp_path / "min")


class _DroppingProxy:
    """A TCP relay to `target` that cuts every connection after `limit` bytes towards the
    client: a link that cannot carry a whole prefetch run."""

    def __init__(self, target, limit):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address, self.target, self.limit = self.sock.getsockname(), target, limit
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, None),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.limit),
                             daemon=True).start()

    @staticmethod
    def _pipe(src, dst, limit):
        sent = 0
        try:
            while limit is None or sent < limit:
                data = src.recv(65536 if limit is None else min(65536, limit - sent))
                if not data:
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.sock.close()


def test_a_failing_background_pull_does_not_end_the_job():
    from uhyve_ctl.pager import Pager, PagingOptions
    area = bytes(i * 7 % 251 for i in range(387 * PAGE_SIZE))
    srv = PageServer(("127.0.0.1", 0), SECRET, [(0x400000, area)])
    srv.start()
    proxy = _DroppingProxy(srv.address, 150 * 1024)
    ram = bytearray(len(area))
    try:
        opts = PagingOptions(proxy.address, SECRET, batch=8, prefetch_pages=64,
                             prefetch_interval=0, retry_for=3)
        pager = Pager([(0x400000, len(area))], opts,
                      read=lambda a, n: bytes(n),
                      install=lambda a, data: ram.__setitem__(
                          slice(a - 0x400000, a - 0x400000 + len(data)), data))
        pager.connect()
        pager.start()
        for page in range(0, 387, 5):                 # the job touches pages as it runs
            pager.ensure(0x400000 + page * PAGE_SIZE, 1)
        assert srv.wait(60), "the pages never all arrived"
        pager.finish()
        assert pager.error is None
        assert bytes(ram) == area
    finally:
        proxy.close()
        srv.close()


def test_state_updates_from_several_threads_all_land(tmp_path, monkeypatch):
    """A post-copy target's puller and its vCPU thread report state at the same moment."""
    from uhyve_ctl.control import ControlServer
    monkeypatch.setenv("HEXO_RUN_DIR", str(tmp_path))
    server = ControlServer("racer", {}, lambda srv, req: {"ok": True})
    failures = []

    def report(n):
        try:
            for i in range(200):
                server.set_state("running", **{f"thread{n}": i})
        except OSError as e:
            failures.append(e)
    threads = [threading.Thread(target=report, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server.close("exited")
    assert failures == []
    state = json.loads((tmp_path / "racer.json").read_text())
    assert state["state"] == "exited" and all(state[f"thread{n}"] == 199 for n in range(4))
