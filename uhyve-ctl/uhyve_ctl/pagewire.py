"""The post-copy page protocol, version 1.1 (docs/formats.md, section 7), both ends' framing.

Every message is a 5-byte header (type u8, payload length u32, little-endian) and a payload.
The source speaks first (HELLO with a nonce); the target answers with an HMAC-SHA256 of both
nonces under the per-migration secret (AUTH); the source proves it holds the secret too and
announces the areas it serves (WELCOME) once its full checkpoint is durable, or refuses with
ERROR 5 (1.1) if that could not be written and the job went on at the source. Then the target
asks for runs of contiguous pages (GET) and gets them (DATA, with a CRC32), or an ERROR; DONE
ends the migration (BYE).
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct
import zlib
from typing import NamedTuple

from . import UhyveError

MAGIC = b"HXPG"
VERSION = (1, 1)
PAGE_SIZE = 0x1000
MAX_RUN = 1024                  # pages in one GET: 4 MiB
NONCE = 32
MAX_CONTROL = 1 << 16           # largest payload of any message but DATA

HELLO, AUTH, WELCOME, GET, DATA, DONE, BYE, ERROR = range(1, 9)
NAMES = {HELLO: "HELLO", AUTH: "AUTH", WELCOME: "WELCOME", GET: "GET", DATA: "DATA",
         DONE: "DONE", BYE: "BYE", ERROR: "ERROR"}

# ERROR codes
E_VERSION, E_AUTH, E_RANGE, E_PROTOCOL, E_RESUMED = 1, 2, 3, 4, 5

_HEADER = struct.Struct("<BI")
_HELLO = struct.Struct(f"<4sHH{NONCE}s")
_AUTH = struct.Struct(f"<4sHH{NONCE}s32s")
_WELCOME = struct.Struct("<32sII")
_AREA = struct.Struct("<QQ")
_RUN = struct.Struct("<QI")
_DATA = struct.Struct("<QII")
_ERROR = struct.Struct("<H")


class ProtocolError(UhyveError):
    """The peer broke the protocol or refused us; `code` is the ERROR code when it said so."""

    def __init__(self, message: str, code: int = E_PROTOCOL):
        super().__init__(message)
        self.code = code


class Refused(ProtocolError):
    """The peer answered with an ERROR message: retrying will not help."""


class Run(NamedTuple):
    start: int          # guest address, page-aligned
    pages: int

    @property
    def end(self) -> int:
        return self.start + self.pages * PAGE_SIZE


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError("the peer closed the connection")
        got += k
    return buf


def send(sock: socket.socket, kind: int, *parts: bytes) -> None:
    """One message, its parts gathered by the kernel (no copy of a DATA's pages here)."""
    views = [memoryview(p).cast("B") for p in (_HEADER.pack(kind, sum(len(p) for p in parts)),
                                                *parts) if len(p)]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views.pop(0))
        if sent:
            views[0] = views[0][sent:]


def recv(sock: socket.socket, expect: tuple[int, ...],
         limit: int = MAX_CONTROL) -> tuple[int, bytes]:
    """Next message, which must be one of `expect` (an ERROR is raised as ProtocolError)."""
    kind, length = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if kind == ERROR:
        payload = _recv_exact(sock, min(length, MAX_CONTROL))
        if len(payload) < _ERROR.size:
            raise ProtocolError(f"malformed ERROR ({len(payload)} bytes, no code)")
        (code,) = _ERROR.unpack_from(payload)
        raise Refused(f"the peer refused: {payload[_ERROR.size:].decode(errors='replace')}", code)
    if kind not in expect:
        raise ProtocolError(f"expected {'/'.join(NAMES[e] for e in expect)}, got message type "
                            f"{kind}")
    if length > limit:
        raise ProtocolError(f"{NAMES[kind]} of {length} bytes exceeds {limit}")
    return kind, bytes(_recv_exact(sock, length))


def send_error(sock: socket.socket, code: int, message: str) -> None:
    send(sock, ERROR, _ERROR.pack(code), message.encode()[:1000])


def mac(secret: bytes, role: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(secret, b"hexo-pages " + role + first + second, hashlib.sha256).digest()


def hello(nonce: bytes) -> bytes:
    return _HELLO.pack(MAGIC, *VERSION, nonce)


def parse_hello(payload: bytes) -> bytes:
    """The source's nonce, after checking magic and major version."""
    if len(payload) != _HELLO.size:
        raise ProtocolError("malformed HELLO")
    magic, major, minor, nonce = _HELLO.unpack(payload)
    _check_version(magic, major, minor, "source")
    return nonce


def auth(secret: bytes, server_nonce: bytes, client_nonce: bytes,
         version: tuple[int, int] = VERSION) -> bytes:
    return _AUTH.pack(MAGIC, *version, client_nonce,
                      mac(secret, b"client", server_nonce, client_nonce))


def parse_auth(payload: bytes, secret: bytes, server_nonce: bytes) -> bytes:
    """The target's nonce, after checking version and its proof of the secret."""
    if len(payload) != _AUTH.size:
        raise ProtocolError("malformed AUTH")
    magic, major, minor, nonce, proof = _AUTH.unpack(payload)
    _check_version(magic, major, minor, "target")
    if not hmac.compare_digest(proof, mac(secret, b"client", server_nonce, nonce)):
        raise ProtocolError("authentication failed: wrong migration secret", E_AUTH)
    return nonce


def _check_version(magic: bytes, major: int, minor: int, who: str) -> None:
    if magic != MAGIC:
        raise ProtocolError(f"the {who} does not speak the hexo page protocol")
    if major != VERSION[0]:
        raise ProtocolError(f"the {who} speaks page protocol {major}.{minor}, this side "
                            f"{VERSION[0]}.{VERSION[1]}", E_VERSION)


def welcome(secret: bytes, server_nonce: bytes, client_nonce: bytes, areas: list[Run]) -> bytes:
    return _WELCOME.pack(mac(secret, b"server", client_nonce, server_nonce), PAGE_SIZE,
                         len(areas)) + b"".join(_AREA.pack(a.start, a.pages * PAGE_SIZE)
                                                for a in areas)


def parse_welcome(payload: bytes, secret: bytes, server_nonce: bytes,
                  client_nonce: bytes) -> list[Run]:
    """The announced areas, after checking the source's proof of the secret."""
    if len(payload) < _WELCOME.size:
        raise ProtocolError("malformed WELCOME")
    proof, page_size, count = _WELCOME.unpack_from(payload)
    if not hmac.compare_digest(proof, mac(secret, b"server", client_nonce, server_nonce)):
        raise ProtocolError("the source could not prove it holds the migration secret", E_AUTH)
    if page_size != PAGE_SIZE or len(payload) != _WELCOME.size + count * _AREA.size:
        raise ProtocolError("malformed WELCOME")
    return [Run(s, n // PAGE_SIZE) for s, n in _AREA.iter_unpack(payload[_WELCOME.size:])]


def get(run: Run) -> bytes:
    return _RUN.pack(run.start, run.pages)


def parse_get(payload: bytes) -> Run:
    if len(payload) != _RUN.size:
        raise ProtocolError("malformed GET")
    return Run(*_RUN.unpack(payload))


def data_header(run: Run, data: bytes) -> bytes:
    return _DATA.pack(run.start, run.pages, zlib.crc32(data))


def parse_data(payload: bytes, asked: Run) -> bytes:
    """The pages of `asked`, checked against the header and its CRC32."""
    if len(payload) < _DATA.size:
        raise ProtocolError("malformed DATA")
    start, pages, crc = _DATA.unpack_from(payload)
    body = payload[_DATA.size:]
    if (start, pages) != tuple(asked) or len(body) != pages * PAGE_SIZE:
        raise ProtocolError(f"DATA for {pages} pages at 0x{start:x} answers a GET of "
                            f"{asked.pages} at 0x{asked.start:x}")
    if zlib.crc32(body) != crc:
        raise ProtocolError(f"corrupt DATA at 0x{start:x} (CRC32 mismatch)")
    return body


def data_limit(pages: int) -> int:
    return _DATA.size + pages * PAGE_SIZE


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' or '[IPv6]:PORT' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"bad address '{text}' (HOST:PORT)")
    return host.strip("[]"), int(port)
