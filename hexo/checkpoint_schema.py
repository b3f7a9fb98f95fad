"""The checkpoint manifest's shape (docs/formats.md, section 3), declared once: a manifest
whose checksum is right but whose content is not (a missing context, a negative pc, strings for
numbers) is refused with the offending field named, before any of it is used.

The checker is a few lines over this table rather than a JSON Schema library because the
checkpoint reader runs on the boards too, whose runtime is the standard library plus what the
emulated backend needs."""

from __future__ import annotations

import re

from . import abi

U64 = ("int", 0, (1 << 64) - 1)
ISA = ("enum", tuple(abi.ISA_IDS))
_AREA = ("obj", {"kind": ("enum", ("data", "heap", "stack")), "start": U64, "size": U64,
                 "stored_size": U64, "file": ("match", r"[A-Za-z0-9._-]*"),
                 "compression": ("enum", ("none", "zlib")), "crc32": ("int", 0, 0xFFFFFFFF),
                 "remote": ("bool",)},
         {"kind", "start", "size", "file", "compression", "stored_size", "crc32"}, None)
_CONTEXT = ("obj", {}, {"pc", "sp"}, U64)

MANIFEST = ("obj", {
    "format": ("enum", ("hexo-checkpoint",)),
    "version": ("list", U64, 2),
    "image": ("obj", {"path": ("str",), "build_id": ("str",), "name": ("any",)},
              {"path", "build_id"}, None),
    "isa": ISA, "target_isa": ISA,
    "mem_size": ("int", 1, abi.MAX_MEM_SIZE),
    "abi_version": U64,
    "created": ("num",),
    "context": _CONTEXT,
    "kernel": ("obj", {}, {"brk", "monotonic_ns"}, U64),
    "files": ("list", ("obj", {"fd": U64, "path": ("str",), "flags": U64, "offset": U64},
                       {"fd", "path", "flags", "offset"}, None), None),
    "argv": ("list", ("str",), None),
    "env": ("list", ("match", r"[^=]+=.*"), None),
    "output": ("obj", {"stdout": U64, "stderr": U64}, {"stdout", "stderr"}, None),
    "areas": ("list", _AREA, None),
    "source": ("obj", {"isa": ISA, "context": _CONTEXT, "areas": ("list", _AREA, None)},
               {"isa", "context", "areas"}, None),
    "postcopy": ("obj", {"protocol": ("list", U64, 2), "server": ("str",),
                         "secret": ("match", r"[0-9a-f]{64}"), "full_checkpoint": ("str",)},
                 {"protocol", "server", "secret", "full_checkpoint"}, None),
    "manifest_crc32": ("int", 0, 0xFFFFFFFF),
}, {"format", "version", "image", "isa", "target_isa", "mem_size", "abi_version", "context",
    "kernel", "files", "areas", "manifest_crc32"}, ("any",))     # a later minor may add keys


class _Wrong(Exception):
    pass


def _check(value, spec, where: str) -> None:
    kind = spec[0]
    if kind == "any":
        return
    if kind == "int":
        if type(value) is not int or not spec[1] <= value <= spec[2]:
            raise _Wrong(f"{where}: {value!r:.40} is not an integer in [{spec[1]}, {spec[2]}]")
    elif kind == "num":
        if type(value) not in (int, float):
            raise _Wrong(f"{where}: {value!r:.40} is not a number")
    elif kind in ("str", "match"):
        if not isinstance(value, str) or (kind == "match" and not re.fullmatch(spec[1], value)):
            raise _Wrong(f"{where}: {value!r:.60} is not " + (
                "a string" if kind == "str" else f"a string matching {spec[1]}"))
    elif kind == "bool":
        if type(value) is not bool:
            raise _Wrong(f"{where}: {value!r:.40} is not true or false")
    elif kind == "enum":
        if value not in spec[1]:
            raise _Wrong(f"{where}: {value!r:.40} is not one of {', '.join(spec[1])}")
    elif kind == "list":
        if not isinstance(value, list) or (spec[2] is not None and len(value) != spec[2]):
            raise _Wrong(f"{where}: not a list" + (f" of {spec[2]}" if spec[2] else ""))
        for i, item in enumerate(value):
            _check(item, spec[1], f"{where}.{i}")
    elif kind == "obj":
        fields, required, others = spec[1], spec[2], spec[3]
        if not isinstance(value, dict):
            raise _Wrong(f"{where}: not an object")
        missing = sorted(required - value.keys())
        if missing:
            raise _Wrong(f"{where}: '{missing[0]}' is a required property")
        for key, item in value.items():
            sub = fields.get(key, others)
            if sub is None:
                raise _Wrong(f"{where}: unknown property '{key}'")
            _check(item, sub, f"{where}.{key}" if where != "the manifest" else key)


def problem(meta) -> str | None:
    """The first way `meta` breaks the declared shape, in words, or None."""
    try:
        _check(meta, MANIFEST, "the manifest")
    except _Wrong as e:
        return str(e)
    return None
