"""Named VMs: a state file and a control socket per running VM.

Both live in the runtime directory ($HEXO_RUN_DIR, else $XDG_RUNTIME_DIR/hexo, else
/run/hexo for root, else /tmp/hexo-<uid>), created mode 0700. The socket serves one JSON
request per connection and answers only peers of the same user (or root), checked with
SO_PEERCRED, so another local user can neither stop nor checkpoint a job. The state file is
what `uhyve-ctl ps` and the scheduler read: name, pid, ISA, backend, memory, state.
"""

import _socket
import os
import struct
import time

from hexo import jsonc

from . import UhyveError

MAX_REQUEST = 1 << 16


class ControlError(UhyveError):
    pass


def run_dir() -> str:
    d = os.environ.get("HEXO_RUN_DIR")
    if not d:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        d = os.path.join(xdg, "hexo") if xdg else (
            "/run/hexo" if os.geteuid() == 0 else f"/tmp/hexo-{os.geteuid()}")
    os.makedirs(d, mode=0o700, exist_ok=True)
    st = os.stat(d)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise ControlError(f"runtime directory {d} must be owned by you with mode 0700")
    return d


def _valid_name(name: str) -> str:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name) \
            or name.startswith("."):
        raise ControlError(f"bad VM name '{name}': use letters, digits, '-', '_' and '.'")
    return name


def _write_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(jsonc.dumps(data))
    os.replace(tmp, path)


def peer_allowed(conn) -> bool:
    """Whether the peer of a Unix socket runs as this user or root (SO_PEERCRED); every
    local control socket of the project answers only those."""
    creds = conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return uid in (0, os.geteuid())


# What ControlServer calls for each request, (server, request) -> reply (a string: `typing`
# would cost every client, `hexo status` among them, ~3 ms to import)
Handler = "Callable[[ControlServer, dict], dict]"


class ControlServer:
    """The VM side: state file plus a socket thread calling `handler(server, request) ->
    reply`; the handler gets the server as an argument because a request may arrive before
    the constructor has returned."""

    def __init__(self, name: str, info: dict,
                 handler: Handler):
        import socket           # the server's: a client (`hexo status`, `ps`) needs neither
        import threading
        self.name = _valid_name(name)
        d = run_dir()
        self.sock_path = os.path.join(d, f"{name}.sock")
        self.state_path = os.path.join(d, f"{name}.json")
        if os.path.exists(self.state_path) and _alive(self.state_path):
            raise ControlError(f"a VM named '{name}' is already running")
        for p in (self.sock_path,):
            if os.path.exists(p):
                os.unlink(p)
        self.info = {"name": name, "pid": os.getpid(), "started": time.time(), **info}
        self._state_lock = threading.Lock()
        self.set_state("booting")
        self.sock = socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.sock.bind(self.sock_path)
        os.chmod(self.sock_path, 0o600)
        self.sock.listen(4)
        self.handler = handler
        self._clients = []                   # one thread per requester
        self._server = threading.Thread(target=self._serve, daemon=True, name=f"control-{name}")
        self._server.start()

    def set_state(self, state: str, **extra) -> None:
        """Update the state file; callable from any thread (a post-copy target's puller
        reports 'done' while the vCPU thread confirms: both wrote one temporary file)."""
        with self._state_lock:
            self.info.update(state=state, updated=time.time(), **extra)
            _write_json(self.state_path, self.info)

    def _serve(self) -> None:
        import threading
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._one, args=(conn,), daemon=True)
            self._clients.append(t)
            t.start()

    def _one(self, conn) -> None:
        with conn:
            try:
                if not peer_allowed(conn):
                    conn.sendall(b'{"ok": false, "error": "permission denied"}\n')
                    return
                request = jsonc.loads(recv_line(conn))
                reply = self.handler(self, request)
            except Exception as e:              # any bad request gets an answer, not a crash
                reply = {"ok": False, "error": str(e)}
            conn.sendall(jsonc.dumps(reply).encode() + b"\n")

    def close(self, final_state: str, **extra) -> None:
        """Record the final state, finish answering requesters, remove the socket."""
        self.set_state(final_state, **extra)
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)  # wakes the accepting thread (close does not)
        except OSError:
            pass
        self.sock.close()
        self._server.join(5)                     # every accepted requester is in _clients
        for t in self._clients:
            t.join(5)
        if os.path.exists(self.sock_path):
            os.unlink(self.sock_path)


def recv_line(conn, limit: int = MAX_REQUEST) -> bytes:
    """One newline-terminated message (or what came before the peer closed)."""
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise ControlError("message too large")
    return buf


def _alive(state_path: str) -> bool:
    try:
        with open(state_path) as f:
            pid = jsonc.loads(f.read())["pid"]
        os.kill(pid, 0)
        return pid != os.getpid()      # this process's own earlier VM (a fallback) has ended
    except (OSError, ValueError, KeyError):
        return False


def request(name: str, req: dict, timeout: float = 60.0) -> dict:
    """Send one request to the named VM and return its reply."""
    path = os.path.join(run_dir(), f"{_valid_name(name)}.sock")
    if not os.path.exists(path):
        raise ControlError(f"no running VM named '{name}'")
    import socket
    with socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
            s.sendall(jsonc.dumps(req).encode() + b"\n")
            reply = recv_line(s)
        except OSError as e:
            raise ControlError(f"VM '{name}' did not answer: {e}") from None
    if not reply:
        raise ControlError(f"VM '{name}' closed the connection")
    return jsonc.loads(reply)


def list_vms() -> list[dict]:
    """State of every VM that has a state file; dead ones are reported as such."""
    d = run_dir()
    out = []
    for entry in sorted(os.listdir(d)):
        if not entry.endswith(".json"):
            continue
        path = os.path.join(d, entry)
        try:
            with open(path) as f:
                info = jsonc.loads(f.read())
            if not isinstance(info, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError):
            info = {"name": entry[:-5], "state": "unreadable"}
        if info.get("state") in ("running", "booting", "checkpointing", "serving") and not _alive(path):
            info["state"] = "dead"
        out.append(info)
    return out
