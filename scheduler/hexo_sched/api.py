"""The daemon's control socket: `hexo submit`, `hexo status` and `hexo run` talk to it.

A Unix socket `control.sock` in the daemon's state directory, mode 0600; the daemon answers only
peers of its own user or root (SO_PEERCRED). One JSON request line, one JSON reply line, both
carrying the protocol version (docs/formats.md, "Scheduler control protocol").
"""

import os
from _socket import AF_UNIX, SOCK_STREAM

from hexo import jsonc
from uhyve_ctl.control import ControlError, peer_allowed, recv_line

from .errors import SchedError

PROTOCOL = "hexo-schedd"
VERSION = 1
MAX_LINE = 1 << 22
SOCKET_NAME = "control.sock"


class ApiError(SchedError, RuntimeError):
    pass


def default_state_dir():
    from pathlib import Path        # not imported by a client given --state-dir
    d = os.environ.get("HEXO_SCHEDD_STATE")
    if d:
        return Path(d)
    return Path("/var/lib/hexo-schedd") if os.geteuid() == 0 else \
        Path.home() / ".local" / "state" / "hexo-schedd"


def check_version(msg) -> None:
    if not isinstance(msg, dict):
        raise ApiError(f"a message must be a JSON object, got {msg!r:.80}")
    if msg.get("protocol") != PROTOCOL or type(msg.get("version")) is not int \
            or msg.get("version") != VERSION:
        raise ApiError(f"protocol {msg.get('protocol')!r} version {msg.get('version')!r}; "
                       f"this side speaks {PROTOCOL} version {VERSION}")


def request(state_dir, op: str, timeout: float = 60.0, **args) -> dict:
    """Send one request; returns the reply, or raises ApiError with the daemon's message.
    Through the C socket type: the `socket` module (with selectors, array and enum) cost a
    client such as `hexo status` ~2.5 ms of CPU, a quarter of the interpreter's own start."""
    import _socket
    reply, conn = _exchange(_socket.socket, state_dir, op, timeout, args)
    conn.close()
    return reply


def connect(state_dir, op: str, timeout: float = 60.0, **args):
    """Send one request; returns the reply and the connection, still open (op `attach`)."""
    import socket
    return _exchange(socket.socket, state_dir, op, timeout, args)


def _exchange(socket_type, state_dir, op: str, timeout: float, args: dict):
    path = os.path.join(state_dir, SOCKET_NAME)
    if not os.path.exists(path):
        raise ApiError(f"no daemon at {state_dir} (is hexo-schedd running? "
                       "--state-dir or HEXO_SCHEDD_STATE say where)")
    s = socket_type(AF_UNIX, SOCK_STREAM)
    try:
        s.settimeout(timeout)
        try:
            s.connect(path)
            s.sendall(jsonc.dumps({"protocol": PROTOCOL, "version": VERSION, "op": op,
                                  **args}).encode() + b"\n")
            line = recv_line(s, MAX_LINE)
        except (OSError, ControlError) as e:
            raise ApiError(f"daemon at {state_dir} did not answer: {e}") from None
        if not line:
            raise ApiError("the daemon closed the connection")
        reply = jsonc.loads(line)
        check_version(reply)
        if not reply.get("ok"):
            raise ApiError(reply.get("error", "request failed"))
    except BaseException:
        s.close()
        raise
    return reply, s


JOB_FIELDS = {"image", "vcpus", "mem", "args"}
MAX_ARGS, MAX_ARG_CHARS = 256, 4096


def parse_job_spec(spec) -> tuple[str, int, int, list[str]]:
    """Typed check of one job of a submit request: (image path, vCPUs, guest RAM in bytes,
    guest arguments). `mem` is a size as every --mem takes it ("256M", "1G"; a bare number is
    MiB) or an integer number of bytes."""
    from hexo.sizes import parse_size
    if not isinstance(spec, dict):
        raise ApiError(f"a job must be a JSON object, got {spec!r:.80}")
    unknown = sorted(set(spec) - JOB_FIELDS)
    if unknown:
        raise ApiError(f"unknown job field(s) {', '.join(unknown)}; known: "
                       f"{', '.join(sorted(JOB_FIELDS))}")
    image = spec.get("image")
    if not isinstance(image, str) or not os.path.isabs(image):
        raise ApiError(f"image must be an absolute path, got {image!r:.200}")
    if not os.path.isfile(image):
        raise ApiError(f"{image}: no such image file")
    vcpus = spec.get("vcpus", 1)
    if type(vcpus) is not int or vcpus < 1:
        raise ApiError(f"{image}: vcpus must be a positive whole number, got {vcpus!r:.40}")
    mem = spec.get("mem", "256M")
    if type(mem) is int:
        size = mem
    elif isinstance(mem, str):
        try:
            size = parse_size(mem)
        except ValueError as e:
            raise ApiError(f"{image}: mem: {e}") from None
    else:
        raise ApiError(f"{image}: mem must be a size such as \"256M\", got {mem!r:.40}")
    if size <= 0:
        raise ApiError(f"{image}: mem must be positive, got {mem!r:.40}")
    args = spec.get("args", [])
    if not isinstance(args, list) or len(args) > MAX_ARGS or not all(
            isinstance(a, str) and len(a) <= MAX_ARG_CHARS and "\0" not in a for a in args):
        raise ApiError(f"{image}: args must be a list of at most {MAX_ARGS} strings of at most "
                       f"{MAX_ARG_CHARS} characters without NUL")
    return image, vcpus, size, args


def reply(ok: bool, **fields) -> dict:
    return {"protocol": PROTOCOL, "version": VERSION, "ok": ok, **fields}


# What ControlServer calls for each request (a string: `typing` would cost every client
# command, `hexo status` among them, ~3 ms to import)
Handler = "Callable[[dict], dict]"


class ControlServer:
    """Serves requests on a thread; `handler(request) -> reply fields` may raise ValueError or
    ApiError for a clear refusal. A reply may carry `hold`, a function that is called with
    the connection after the reply is sent, before it is closed (for a client that stays
    connected so that the daemon learns when it is gone)."""

    def __init__(self, state_dir, handler: Handler):
        import socket                   # the daemon's side: a client imports none of these
        import threading
        from pathlib import Path
        self.path = Path(state_dir) / SOCKET_NAME
        if self.path.exists():
            self.path.unlink()
        self.sock = socket.socket(AF_UNIX, SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(str(self.path))
        finally:
            os.umask(old)
        self.sock.listen(8)
        self.handler = handler
        threading.Thread(target=self._serve, daemon=True, name="schedd-control").start()

    def _serve(self) -> None:
        import threading
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn) -> None:
        hold = None
        with conn:
            try:
                if not peer_allowed(conn):
                    out = reply(False, error="permission denied")
                else:
                    req = jsonc.loads(recv_line(conn, MAX_LINE))
                    check_version(req)
                    fields = self.handler(req)
                    hold = fields.pop("hold", None)
                    out = reply(True, **fields)
            except (ApiError, ControlError, ValueError, KeyError, TypeError) as e:
                out = reply(False, error=str(e))
            except Exception as e:               # a bug must still answer the client
                out = reply(False, error=f"internal error: {e!r}")
            try:
                conn.sendall(jsonc.dumps(out).encode() + b"\n")
            except OSError:
                return
            if hold is not None:
                hold(conn)

    def close(self) -> None:
        self.sock.close()
        if self.path.exists():
            self.path.unlink()
