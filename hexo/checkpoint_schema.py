"""The checkpoint manifest's shape (docs/formats.md, section 3) as a JSON Schema: a manifest
whose checksum is right but whose content is not (a missing context, a negative pc, strings for
numbers) is refused with the offending field named, before any of it is used."""

from . import abi

_U64 = {"type": "integer", "minimum": 0, "maximum": (1 << 64) - 1}
_ISA = {"enum": list(abi.ISA_IDS)}
_AREA = {
    "type": "object",
    "required": ["kind", "start", "size", "file", "compression", "stored_size", "crc32"],
    "properties": {
        "kind": {"enum": ["data", "heap", "stack"]},
        "start": _U64, "size": _U64, "stored_size": _U64,
        "file": {"type": "string", "pattern": "^([A-Za-z0-9._-]*)$"},
        "compression": {"enum": ["none", "zlib"]},
        "crc32": {"type": "integer", "minimum": 0, "maximum": 0xFFFFFFFF},
        "remote": {"type": "boolean"},
    },
    "additionalProperties": False,
}
_CONTEXT = {
    "type": "object",
    "required": ["pc", "sp"],
    "additionalProperties": _U64,
}

MANIFEST = {
    "type": "object",
    "required": ["format", "version", "image", "isa", "target_isa", "mem_size", "abi_version",
                 "context", "kernel", "files", "areas", "manifest_crc32"],
    "properties": {
        "format": {"const": "hexo-checkpoint"},
        "version": {"type": "array", "prefixItems": [_U64, _U64], "minItems": 2,
                    "maxItems": 2},
        "image": {"type": "object", "required": ["path", "build_id"],
                  "properties": {"path": {"type": "string"}, "build_id": {"type": "string"},
                                 "name": {"type": ["string", "null"]}}},
        "isa": _ISA, "target_isa": _ISA,
        "mem_size": {"type": "integer", "minimum": 1, "maximum": abi.MAX_MEM_SIZE},
        "abi_version": _U64,
        "created": {"type": "number"},
        "context": _CONTEXT,
        "kernel": {"type": "object", "required": ["brk", "monotonic_ns"],
                   "additionalProperties": _U64},
        "files": {"type": "array", "items": {
            "type": "object", "required": ["fd", "path", "flags", "offset"],
            "properties": {"fd": _U64, "path": {"type": "string"}, "flags": _U64,
                           "offset": _U64}}},
        "argv": {"type": "array", "items": {"type": "string"}},
        "areas": {"type": "array", "items": _AREA},
        "source": {"type": "object", "required": ["isa", "context", "areas"],
                   "properties": {"isa": _ISA, "context": _CONTEXT,
                                  "areas": {"type": "array", "items": _AREA}}},
        "postcopy": {"type": "object",
                     "required": ["protocol", "server", "secret", "full_checkpoint"],
                     "properties": {"protocol": {"type": "array", "items": _U64},
                                    "server": {"type": "string"},
                                    "secret": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                    "full_checkpoint": {"type": "string"}}},
        "manifest_crc32": {"type": "integer"},
    },
}


def problem(meta: dict) -> str | None:
    """The first way `meta` breaks the schema, in words, or None."""
    from jsonschema import Draft202012Validator
    err = next(iter(sorted(Draft202012Validator(MANIFEST).iter_errors(meta),
                           key=lambda e: list(e.absolute_path))), None)
    if err is None:
        return None
    where = ".".join(str(p) for p in err.absolute_path) or "the manifest"
    return f"{where}: {err.message}"
