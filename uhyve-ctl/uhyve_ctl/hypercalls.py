"""Host side of the hypercalls: every guest argument is checked before it is used.

A guest can only name guest-physical ranges (checked against guest RAM by GuestMemory), its
own small file descriptor numbers (never host fds), and paths below the directories the
user mounted. Anything else ends the guest with a Crashed report, or returns -errno where a
real OS would.
"""

import os
import posixpath
import stat
import time

from hexo import abi
from hexo.records import record
from .backends import Crashed, Exited, StopReason
from .memory import GuestMemoryError

MAX_FILES = 64
MAX_AREAS = 16
MAX_IO = 1 << 30


def guest_errno(e: OSError) -> int:
    import errno as host_errno      # only on an error: ~0.3 M instructions to load
    name = host_errno.errorcode.get(e.errno or 0, "EIO")
    return -abi.ERRNO.get(name, abi.ERRNO["EIO"])


class Mount(record("Mount", "host_dir guest_dir read_only", defaults=(False,))):
    """A host directory (absolute, symlinks resolved) visible to the guest as `guest_dir`."""
    __slots__ = ()

    @classmethod
    def parse(cls, spec: str) -> "Mount":
        """HOST_DIR[:GUEST_DIR[:ro]]; GUEST_DIR defaults to HOST_DIR's absolute path."""
        parts = spec.split(":")
        read_only = parts[-1] == "ro" and len(parts) > 1
        if read_only:
            parts = parts[:-1]
        if len(parts) > 2 or not parts[0]:
            raise ValueError(f"bad mount '{spec}': expected HOST_DIR[:GUEST_DIR[:ro]]")
        host = os.path.realpath(parts[0])
        if not os.path.isdir(host):
            raise ValueError(f"bad mount '{spec}': {host} is not a directory")
        guest = posixpath.normpath(parts[1] if len(parts) == 2 else host)
        if not guest.startswith("/"):
            raise ValueError(f"bad mount '{spec}': guest directory must be absolute")
        return cls(host, guest, read_only)


class FileTable:
    """Guest file descriptors -> host fds; 0-2 are the hypervisor's own stdio."""

    def __init__(self, mounts: tuple[Mount, ...] = (), stdio: tuple[int, int, int] = (0, 1, 2)):
        self.mounts = sorted(mounts, key=lambda m: -len(m.guest_dir))
        # guest fd -> (host fd, owned by us, guest path, ABI open flags)
        self.fds: dict[int, tuple[int, bool, str, int]] = {
            i: (fd, False, "", 0) for i, fd in enumerate(stdio)}
        # bytes the job has written to its stdout and stderr since it first started (a
        # restore goes on from its checkpoint's counts): a reader of the output streams
        # knows from a checkpoint's counts which output the resumed job produces again
        self.output = {"stdout": 0, "stderr": 0}
        # the last open no mount allowed, (guest path, why): a crash report names it, since a
        # program that does not check fopen() dies at the NULL stream soon after
        self.refused: tuple[str, str] | None = None

    def wrote(self, guest_fd: int, n: int) -> None:
        """Count `n` bytes written through guest fd `guest_fd`."""
        entry = self.fds.get(guest_fd)
        if guest_fd in (1, 2) and entry is not None and not entry[1]:
            self.output["stdout" if guest_fd == 1 else "stderr"] += n

    def resolve(self, guest_path: str, writing: bool, follow_last: bool = True) -> str:
        """The host path of a guest path inside a mount. With `follow_last` false a final
        symlink is the object itself (unlink removes the link, not its target); the
        directories above it are still resolved and confined to the mount."""
        import errno as host_errno
        path = posixpath.normpath(posixpath.join("/", guest_path))
        for m in self.mounts:
            if path == m.guest_dir or path.startswith(m.guest_dir.rstrip("/") + "/"):
                rel = posixpath.relpath(path, m.guest_dir)
                parent, name = posixpath.split(rel)
                if follow_last or name == ".":
                    host = os.path.realpath(os.path.join(m.host_dir, rel))
                else:
                    host = os.path.join(os.path.realpath(os.path.join(m.host_dir, parent)), name)
                if os.path.commonpath((host, m.host_dir)) != m.host_dir:
                    raise PermissionError(host_errno.EACCES, "path escapes its mount")
                if writing and m.read_only:
                    raise PermissionError(host_errno.EROFS, "read-only mount")
                return host
        raise FileNotFoundError(host_errno.ENOENT, "not under any mounted directory")

    def open(self, guest_path: str, flags: int, mode: int) -> int:
        acc = flags & abi.OPEN_FLAGS["O_ACCMODE"]
        host_flags = {0: os.O_RDONLY, 1: os.O_WRONLY, 2: os.O_RDWR}.get(acc)
        if host_flags is None:
            return -abi.ERRNO["EINVAL"]
        for name in ("O_CREAT", "O_TRUNC", "O_APPEND", "O_EXCL"):
            if flags & abi.OPEN_FLAGS[name]:
                host_flags |= getattr(os, name)
        writing = acc != 0 or bool(flags & (abi.OPEN_FLAGS["O_CREAT"] | abi.OPEN_FLAGS["O_TRUNC"]))
        if len(self.fds) >= MAX_FILES:
            return -abi.ERRNO["EMFILE"]
        try:
            host = self.resolve(guest_path, writing)
        except OSError as e:
            self.refused = (guest_path, e.strerror)
            return guest_errno(e)
        try:
            fd = os.open(host, host_flags | os.O_CLOEXEC | os.O_NOFOLLOW, mode & 0o777)
        except OSError as e:
            return guest_errno(e)
        guest_fd = next(i for i in range(3, MAX_FILES + 3) if i not in self.fds)
        self.fds[guest_fd] = (fd, True, guest_path, flags)
        return guest_fd

    def describe(self) -> list[dict]:
        """Open files with their offsets, for a checkpoint."""
        return [{"fd": g, "path": path, "flags": flags, "offset": os.lseek(fd, 0, os.SEEK_CUR)}
                for g, (fd, owned, path, flags) in sorted(self.fds.items()) if owned]

    def reopen(self, files: list[dict]) -> None:
        """Reopen a checkpoint's files under this table's mounts, at their offsets."""
        keep = ~(abi.OPEN_FLAGS["O_CREAT"] | abi.OPEN_FLAGS["O_TRUNC"] | abi.OPEN_FLAGS["O_EXCL"])
        for f in files:
            fd = self.open(f["path"], f["flags"] & keep, 0)
            if fd < 0:
                raise OSError(-fd, f"cannot reopen the guest's file {f['path']} "
                                   f"(is its directory mounted?)")
            entry = self.fds.pop(fd)
            os.lseek(entry[0], f["offset"], os.SEEK_SET)
            self.fds[f["fd"]] = entry

    def stdio_types(self) -> tuple[int, int, int]:
        """The boot info's STDIO_* type of guest fds 0-2: C line-buffers stdout only on a
        terminal, and the guest answers fstat and isatty of them itself."""
        def kind(guest_fd: int) -> int:
            try:
                fd = self.fds[guest_fd][0]
                mode = os.fstat(fd).st_mode
            except (KeyError, OSError):
                return abi.STDIO_TYPES["STDIO_UNKNOWN"]
            name = ("STDIO_FILE" if stat.S_ISREG(mode) else
                    "STDIO_PIPE" if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else
                    ("STDIO_TERMINAL" if os.isatty(fd) else "STDIO_CHARDEV")
                    if stat.S_ISCHR(mode) else "STDIO_UNKNOWN")
            return abi.STDIO_TYPES[name]
        return kind(0), kind(1), kind(2)

    def writable(self) -> dict[int, int]:
        """Guest fds open for writing -> host fds: stdout, stderr and files opened so."""
        return {g: fd for g, (fd, owned, _, flags) in self.fds.items()
                if (g in (1, 2) and not owned) or
                (owned and flags & abi.OPEN_FLAGS["O_ACCMODE"] != abi.OPEN_FLAGS["O_RDONLY"])}

    def host_fd(self, guest_fd: int) -> int | None:
        entry = self.fds.get(guest_fd)
        return entry[0] if entry else None

    def close(self, guest_fd: int) -> int:
        entry = self.fds.pop(guest_fd, None)
        if entry is None:
            return -abi.ERRNO["EBADF"]
        if entry[1]:
            os.close(entry[0])
        return 0

    def close_all(self) -> None:
        for guest_fd in [g for g, entry in self.fds.items() if entry[1]]:
            self.close(guest_fd)


class Hypercalls:
    """Dispatches doorbell stores; returns a StopReason when the guest must stop."""

    def __init__(self, memory, files: FileTable, on_migrate=None, ring=None):
        self.memory = memory
        self.files = files
        self.ring = ring          # ioring.OutputRing: drained before every hypercall
        self.count = 0
        # (context, kernel state, areas) -> StopReason to stop, or -errno to resume the guest
        self.on_migrate = on_migrate
        # nr -> everything an exit needs, built once: no per-exit lookups or strings
        self._table = {nr: (args, getattr(self, f"_{name.lower()}"), name,
                            f"{name} arguments", f"{name} results")
                       for name, (nr, args) in abi.HYPERCALLS.items()}

    def __call__(self, nr: int, arg: int) -> "StopReason | None":
        self.count += 1
        if self.ring is not None:
            broken = self.ring.drain()
            if broken is not None:
                return Crashed(broken)
        entry = self._table.get(nr)
        if entry is None:
            return Crashed(f"guest made unknown hypercall {nr} (ABI {abi.ABI_MAJOR}.{abi.ABI_MINOR})")
        args_struct, handler, name, what_args, what_results = entry
        memory = self.memory
        try:
            # checked once, read and written in place: the struct's bytes are not copied
            memory.check(arg, args_struct.size, what_args)
            args = args_struct.unpack(memory.view, arg)
            stop, results = handler(**args)
            if results:
                args.update(results)
                args_struct.codec.pack_into(memory.view, arg,
                                            *map(args.__getitem__, args_struct.names))
            return stop
        except GuestMemoryError as e:
            return Crashed(f"hypercall {name} rejected: {e}")

    def _exit(self, status):
        return Exited(status), None

    def _panic(self, msg, len):
        text = self.memory.read_string(msg, len, 4096, "panic message")
        return Crashed("guest panic: " + text.decode("utf-8", "replace")), None

    def _io(self, fd, length, op):
        host = self.files.host_fd(fd)
        if host is None:
            return -abi.ERRNO["EBADF"]
        if length > MAX_IO:
            length = MAX_IO
        try:
            return op(host, length)
        except OSError as e:
            return guest_errno(e)

    def _write(self, fd, buf, len, ret):
        view = self.memory.slice(buf, len, "WRITE buffer")
        ret = self._io(fd, len, lambda h, n: os.write(h, view[:n]))
        if ret > 0:
            self.files.wrote(fd, ret)
        return None, {"ret": ret}

    def _read(self, fd, buf, len, ret):
        view = self.memory.slice(buf, len, "READ buffer")
        return None, {"ret": self._io(fd, len, lambda h, n: os.readv(h, [view[:n]]))}

    def _path(self, path, path_len) -> str | int:
        """The guest path, or the -errno that refuses it (too long, or an embedded NUL)."""
        if path_len > abi.MAX_PATH:
            return -abi.ERRNO["ENAMETOOLONG"]
        raw = self.memory.read(path, path_len, "path")
        if b"\0" in raw:
            return -abi.ERRNO["EINVAL"]
        return raw.decode("utf-8", "surrogateescape")

    def _open(self, path, path_len, flags, mode, ret):
        p = self._path(path, path_len)
        fd = p if isinstance(p, int) else self.files.open(p, flags, mode)
        if fd >= 0 and self.ring is not None:
            self.ring.deferred.pop(fd, None)
            self.ring.publish_fds()
        return None, {"ret": fd}

    def _close(self, fd, ret):
        ret = self.files.close(fd)
        if self.ring is not None:
            self.ring.publish_fds()
            ret = self.ring.deferred.pop(fd, ret)    # a buffered write that failed
        return None, {"ret": ret}

    def _flush(self, ret):
        return None, None        # the ring was drained before this call

    def _lseek(self, fd, offset, whence, ret):
        if whence not in (0, 1, 2):
            return None, {"ret": -abi.ERRNO["EINVAL"]}
        return None, {"ret": self._io(fd, 0, lambda h, _: os.lseek(h, offset, whence))}

    def _fstat(self, fd, ret, size, mode, reserved):
        st = self._io(fd, 0, lambda h, _: os.fstat(h))
        if isinstance(st, int):
            return None, {"ret": st}
        kind = ("S_IFDIR" if stat.S_ISDIR(st.st_mode) else
                "S_IFCHR" if stat.S_ISCHR(st.st_mode) else
                "S_IFIFO" if stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode) else
                "S_IFREG")
        return None, {"ret": 0, "size": st.st_size, "mode": abi.FILE_TYPES[kind]}

    def _clock(self, monotonic_ns, realtime_ns):
        return None, {"monotonic_ns": time.monotonic_ns(), "realtime_ns": time.time_ns()}

    def _migrate(self, context, kernel, areas, nareas, ret):
        if self.on_migrate is None:
            return None, {"ret": -abi.ERRNO["ENOSYS"]}
        if nareas > MAX_AREAS:
            return Crashed(f"MIGRATE with {nareas} areas (at most {MAX_AREAS})"), None
        ctx = abi.CPU_CONTEXT.unpack(self.memory.read(context, abi.CPU_CONTEXT.size, "context"))
        state = abi.KERNEL_STATE.unpack(self.memory.read(kernel, abi.KERNEL_STATE.size, "kernel"))
        raw = self.memory.read(areas, abi.AREA.size * nareas, "area list")
        found = []
        for i in range(nareas):
            a = abi.AREA.unpack(raw[i * abi.AREA.size:(i + 1) * abi.AREA.size])
            self.memory.check(a["start"], a["size"], "migration area", fetch=False)
            found.append(a)
        outcome = self.on_migrate(ctx, state, found)
        if isinstance(outcome, int):
            return None, {"ret": outcome}
        return outcome, None

    def _unlink(self, path, path_len, ret):
        return None, {"ret": self._in_mount(path, path_len, os.unlink)}

    def _mkdir(self, path, path_len, mode, reserved, ret):
        return None, {"ret": self._in_mount(path, path_len,
                                            lambda host: os.mkdir(host, mode & 0o777))}

    def _in_mount(self, path, path_len, op) -> int:
        """0 once `op` has acted on the host path of a guest path in a writable mount (a
        final symlink is the object itself), or the -errno that refused it."""
        p = self._path(path, path_len)
        if isinstance(p, int):
            return p
        try:
            op(self.files.resolve(p, writing=True, follow_last=False))
            return 0
        except OSError as e:
            return guest_errno(e)
