"""hexo: build multi-ISA unikernel images and inspect them.

`hexo inspect IMAGE` imports neither argparse nor pathlib (pathlib alone cost it ~4 ms of
CPU, a fifth); every other command parses its arguments into pathlib paths.
"""

import os
import sys

from . import home_dir


def _parser():
    import argparse
    from pathlib import Path
    p = argparse.ArgumentParser(prog="hexo", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("workloads", help="list the built-in workloads")
    b = sub.add_parser("build", help="build a .hexo image (or a native executable)",
                       description="Build C sources, or a built-in workload, into one image "
                                   "holding an x86-64 and an aarch64 build at one layout.")
    b.add_argument("sources", nargs="*", type=Path)
    b.add_argument("--workload", help="a built-in workload instead of sources")
    b.add_argument("--class", dest="klass", help="NPB problem class (S, W, A)")
    b.add_argument("-o", "--output", type=Path, required=True)
    b.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME[=VALUE]")
    b.add_argument("-I", dest="include_dirs", action="append", default=[], type=Path)
    b.add_argument("--native", action="store_true",
                   help="build an ordinary Linux executable for this host instead")
    b.add_argument("--linux", action="store_true",
                   help="static Linux executables (same layout and metadata) instead of "
                        "unikernels, for process and container migration with CRIU")
    b.add_argument("--native-isa", choices=("x86_64", "aarch64"),
                   help="with --native: a static Linux executable for this ISA (e.g. for an "
                        "arm64 board)")
    b.add_argument("--keep-build-dir", type=Path, help="keep intermediate files here")
    b.add_argument("--migratable", action=argparse.BooleanOptionalAction,
                   help="record live values at every call site that can lead to a migration "
                        "point, for cross-ISA migration (metadata stored in the image; the "
                        "default: a job nobody planned to move can still be moved; costs "
                        "~3%% run time, see bench/corpus.py)")
    b.add_argument("--auto-points", action="store_true",
                   help="also put a migration point at every function entry and at the head "
                        "of every outermost loop that holds another loop (implies "
                        "--migratable)")
    t = sub.add_parser("transform", help="rewrite a checkpoint to resume on another ISA",
                       description="Rewrite the stack and registers of CHECKPOINT for ISA into a "
                                   "new checkpoint; the original is left untouched.")
    t.add_argument("checkpoint", type=Path)
    t.add_argument("--to", dest="isa", required=True, choices=("x86_64", "aarch64"))
    t.add_argument("-o", "--output", type=Path, required=True)
    t.add_argument("--image", type=Path, help="the image (default: the path the checkpoint "
                   "records)")
    i = sub.add_parser("inspect", help="show what an image or a checkpoint holds")
    i.add_argument("image")
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")
    return p, sub


def _workloads(args) -> int:
    from .workloads import WORKLOADS
    for w in WORKLOADS.values():
        classes = f" [classes {','.join(w.classes)}]" if w.classes else ""
        print(f"{w.name:14} {w.description}{classes}")
    return 0


def _output_file(path):
    """An output path whose directory exists and that is not itself a directory."""
    if path.is_dir():
        raise ValueError(f"{path} is a directory; -o names the file to write")
    if not path.resolve().parent.is_dir():
        raise ValueError(f"{path.parent} does not exist; create it first")
    return path


def _new_directory(path):
    """An output directory that does not exist yet, in one that does."""
    if path.exists():
        raise ValueError(f"{path} already exists; -o names a new checkpoint directory")
    if not path.resolve().parent.is_dir():
        raise ValueError(f"{path.parent} does not exist; create it first")
    return path


CXX_SUFFIXES = (".cc", ".cpp", ".cxx", ".c++", ".cp", ".C", ".CPP")


def _build(args) -> int:
    from .toolchain.build import BuildRequest, build, build_native
    from .toolchain.sysroot import ToolchainError
    from . import workloads
    _output_file(args.output)
    for src in args.sources:
        if src.suffix in CXX_SUFFIXES:
            raise ValueError(f"{src}: C++ is not supported: the library OS has no C++ runtime "
                             f"(no C++ standard library, exceptions or RTTI); hexo build "
                             f"compiles C")
        if src.suffix != ".c":
            raise ValueError(f"{src}: not a C source file (hexo build compiles .c files)")
        if not src.is_file():
            raise ValueError(f"{src}: no such source file")

    sources, defines, name, extra = list(args.sources), list(args.defines), None, {}
    if args.workload:
        if sources:
            raise ValueError("give either --workload or source files, not both")
        w = workloads.get(args.workload)
        sources = w.paths()
        wdefs = w.defines(args.klass)
        defines += wdefs
        name = w.name + (f".{wdefs[0][-1]}" if wdefs else "")
        extra = {"workload": {"name": w.name, "class": wdefs[0][-1] if wdefs else None}}
    elif not sources:
        raise ValueError("nothing to build: give C sources or --workload")
    if args.native:
        isa = build_native(sources, args.output, defines, args.include_dirs, args.native_isa)
        print(f"{args.output}: native {isa} Linux executable")
        return 0
    if args.auto_points and args.migratable is False:
        raise ValueError("--auto-points makes a migratable build; drop --no-migratable")
    req = BuildRequest(sources, args.output, name or args.output.stem, defines,
                       args.include_dirs, extra, migratable=args.migratable is not False,
                       auto_points=args.auto_points, linux=args.linux)
    try:
        m = build(req, keep=args.keep_build_dir)
    except ToolchainError as e:
        if args.migratable is None and "migrat" in str(e):
            raise ToolchainError(f"{e}\n(images are migratable by default; --no-migratable "
                                 f"builds one that cannot move across ISAs)") from None
        raise
    lay = m["layout"]
    print(f"{args.output}: {', '.join(m['isas'])}; {lay['symbols_at_same_address']} symbols "
          f"at the same address on every ISA; needs {m['memory']['min_mem'] >> 20} MiB")
    if "migration" in m:
        mig = m["migration"]
        print(f"migratable: {mig['call_sites']} call sites, {mig['live_values']} live values "
              f"recorded")
        if not mig["call_sites"]:
            # Nothing reaches hexo_check_migrate(): checkpoint, migrate and certify could
            # only wait for a point the job never passes.
            print("no migration point: nothing calls hexo_check_migrate(), so a run cannot "
                  "be checkpointed or moved; --auto-points puts one at every function entry "
                  "and outer loop head")
    return 0


def _print_json(data: dict) -> int:
    import json
    json.dump(data, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


def _inspect_checkpoint(args) -> int:
    from .checkpoint import Checkpoint
    ck = Checkpoint(args.image)
    m = ck.meta
    if args.json:
        return _print_json(m)
    ck.verify()
    print(f"checkpoint {ck.path}, format {'.'.join(map(str, m['version']))} (checksums verified)")
    print(f"image      {m['image']['path']} ({m['image']['name']}, build {m['image']['build_id']})")
    print(f"registers  {m['isa']} (to resume on {m['target_isa']}); pc {m['context']['pc']:#x} "
          f"sp {m['context']['sp']:#x}")
    print(f"kernel     heap break {m['kernel']['brk']:#x}, guest clock "
          f"{m['kernel']['monotonic_ns'] / 1e9:.3f} s, {len(m['files'])} open file(s)")
    for a in ck.areas:
        where = ("remote (page server)" if a.remote
                 else f"stored {a.stored_size} ({a.compression})")
        print(f"  {a.kind:6} [{a.start:#x}, {a.start + a.size:#x}) {a.size} bytes, {where}, "
              f"crc32 {a.crc32:08x}")
    if "postcopy" in m:
        print(f"post-copy  pages from {m['postcopy']['server']} (page protocol "
              f"{'.'.join(map(str, m['postcopy']['protocol']))}); full checkpoint at the source: "
              f"{m['postcopy']['full_checkpoint']}")
    if ck.source_isa:
        print(f"kept       the {ck.source_isa} state it was transformed from (registers, "
              f"{sum(a.size for a in ck.kept_areas)} bytes of stack): the job's safe copy "
              f"until the target confirms")
    print(f"total      {sum(a.size for a in ck.areas)} bytes of application state, "
          f"{ck.stored_bytes} stored; guest RAM {m['mem_size'] >> 20} MiB")
    return 0


def _inspect(args) -> int:
    import hashlib

    from .image import Image, ImageError
    if os.path.isdir(args.image):
        return _inspect_checkpoint(args)
    img = Image(args.image)
    m = img.manifest
    if args.json:
        return _print_json(m)
    for isa in img.isas:
        if hashlib.sha256(img.elf(isa)).hexdigest() != m["isas"][isa]["elf_sha256"]:
            raise ImageError(f"{args.image}: the {isa} ELF does not match its recorded SHA-256")
    print(f"image      {args.image} ({m['name']}), format {m['format']}, "
          f"built by {m['created_by']}")
    print(f"build id   {m['build_id']}")
    print(f"ABI        {m['abi_version'] >> 16}.{m['abi_version'] & 0xffff}")
    for isa, info in m["isas"].items():
        segs = ", ".join(f"{s['flags']}@{s['vaddr']:#x}+{s['memsz']:#x}" for s in info["segments"])
        print(f"{isa:10} entry {info['entry']:#x}; {segs}; sha256 {info['elf_sha256'][:16]}")
    lay = m["layout"]
    print(f"layout     {lay['symbols_at_same_address']} symbols and {lay['shared_sections']} "
          f"sections at the same address on every ISA (checked at build time)")
    for isa, syms in lay["isa_private_symbols"].items():
        print(f"           {isa}-only: {', '.join(syms) or 'nothing'}")
    for region, (lo, hi) in lay["areas"].items():
        print(f"  {region:8} [{lo:#x}, {hi:#x}) {hi - lo} bytes")
    if "migration" in m:
        from .retarget import metadata
        for isa in img.isas:
            metadata(img, isa)          # the transform's own reader: corrupt metadata fails here
        mig = m["migration"]
        print(f"migration  {mig['call_sites']} call sites, {mig['live_values']} live values "
              f"recorded (metadata {'.'.join(map(str, mig['metadata_version']))}, readable on "
              f"every ISA)")
    mem = m["memory"]
    print(f"memory     image ends at {mem['image_end']:#x}; needs at least "
          f"{mem['min_mem'] >> 20} MiB of guest RAM")
    return 0


def _transform(args) -> int:
    from . import checkpoint
    from .image import Image
    from .retarget import kept_source, retarget
    _new_directory(args.output)
    ck = checkpoint.Checkpoint(args.checkpoint)
    image = Image(args.image or ck.meta["image"]["path"])
    ck.check_image(image)
    state = {k: v for k, v in ck.meta.items()
             if k not in ("format", "version", "areas", "manifest_crc32", "source")}
    areas = [(a.kind, a.start, ck.read(a)) for a in ck.areas]
    kept = kept_source(state, areas, args.isa)
    state, areas = retarget(state, areas, image, args.isa)
    out = checkpoint.write(args.output, state, areas,
                           compress=any(a.compression != "none" for a in ck.areas), kept=kept)
    info = state.get("transformed", {})
    print(f"{out.path}: resumes on {args.isa}"
          + (f"; {info['frames']} frames rewritten in {info['ms']:.1f} ms" if info else ""))
    return 0


COMMANDS = {"workloads": _workloads, "build": _build, "inspect": _inspect,
            "transform": _transform}
PLUGIN_GROUP = "hexo.commands"


def _plugin_cache() -> tuple[str, str]:
    """The file that lists the `hexo.commands` entry points, and the key its first lines
    must hold. Importing importlib.metadata costs more than the rest of a command (it brings
    email, zipfile, csv...), so the list is kept in a cache file keyed by the modification
    times of the import path's directories, which installing or removing a distribution
    changes."""
    import zlib
    dirs = [d for d in sys.path if d]       # not '' (the working directory)
    stamps = []
    for d in dirs:
        try:
            stamps.append(f"{d}:{os.stat(d).st_mtime_ns}")
        except OSError:
            pass
    key = f"{sys.executable}\n{PLUGIN_GROUP}\n" + "\n".join(stamps)
    home = home_dir()
    # one file per interpreter and import path, rewritten when a directory's time changes;
    # named apart from the "commands-" files of hexo versions that kept no command names
    where = zlib.crc32("\n".join([sys.executable, *dirs]).encode())
    return os.path.join(home, f"plugin-commands-{where:08x}"), key


def _write_plugin_cache(cache: str, key: str, entries: dict[str, list[str]]) -> None:
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = f"{cache}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{key}\n\n" + "\n".join(" ".join([e, *c]) for e, c in entries.items()))
        os.replace(tmp, cache)
    except OSError:
        pass                    # no cache: the next command looks them up again


def _plugin_entries() -> dict[str, list[str]]:
    """The `module:function` of every `hexo.commands` entry point, each with the commands
    it registered when the full parser last ran (none before that)."""
    cache, key = _plugin_cache()
    try:
        with open(cache) as f:
            head, _, body = f.read().partition("\n\n")
        if head == key:
            return {line.split()[0]: line.split()[1:] for line in body.splitlines() if line}
    except OSError:
        pass
    from importlib.metadata import entry_points
    found = {ep.value: [] for ep in entry_points(group=PLUGIN_GROUP)}
    _write_plugin_cache(cache, key, found)
    return found


def _plugins(sub) -> None:
    """Subcommands of the packages above the core (runtimes, scheduler), registered through
    the `hexo.commands` entry-point group so that the core imports none of them. Which
    commands each one registered goes into the cache, for `_quick_plugin`."""
    import importlib
    entries = _plugin_entries()
    owners = {}
    for value in entries:
        module, _, attr = value.partition(":")
        before = set(sub.choices)
        getattr(importlib.import_module(module.strip()), attr.strip())(sub)
        owners[value] = sorted(set(sub.choices) - before)
    if owners != entries:
        _write_plugin_cache(*_plugin_cache(), owners)


def _quick_plugin(argv: list[str]):
    """A plug-in command read without argparse: the module that registered argv[0] (as the
    cache says) is asked through its `quick(argv)`, which returns the parsed command line
    (with `run`) or None for the full parser. Only that module is imported."""
    if not argv or argv[0] in COMMANDS:
        return None
    for value, commands in _plugin_entries().items():
        if argv[0] in commands:
            module = value.partition(":")[0].strip()
            __import__(module)          # importlib brings warnings: ~0.4 ms of `hexo status`
            quick = getattr(sys.modules[module], "quick", None)
            return quick(argv) if quick else None
    return None


def main(argv=None) -> int:
    """The command; without `argv` it is the process (the console script, a board's wrapper).
    Then a command that starts no thread and leaves nothing for exit to do (`inspect`, or a
    plug-in's whose parser sets `ends_process`) ends the process with os._exit as soon as its
    output is flushed: the interpreter's teardown, finalizing every module json, re and
    hashlib brought, cost `hexo inspect` ~3 ms of CPU, a fifth of it. Not under a profiler
    or a tracer (cProfile, coverage): those report at exit."""
    try:
        code, args = _main(argv)
    except BrokenPipeError:
        # The reader went away (`hexo certify ... | head`): stop as a Unix filter does, with
        # SIGPIPE's status, and let nothing flush into the closed pipe at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    if (argv is None and args is not None and
            (args.cmd == "inspect" or getattr(args, "ends_process", False))
            and sys.getprofile() is None and sys.gettrace() is None):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:
            os._exit(128 + 13)
        except OSError:
            code = 120              # what the interpreter's exit would make of it
        os._exit(code)
    return code


def _quick_inspect(argv: list[str]):
    """`inspect PATH [--json]` read without argparse, which with the gettext, locale and
    shutil modules it brings costs a third of the command; any other form (help, errors,
    abbreviations) goes to the full parser. tests/test_cli_errors.py checks they agree."""
    if argv[:1] != ["inspect"] or not 2 <= len(argv) <= 3:
        return None
    paths = [a for a in argv[1:] if a != "--json"]
    if len(paths) != 1 or paths[0].startswith("-"):
        return None
    from .records import Namespace
    return Namespace(cmd="inspect", image=paths[0], json="--json" in argv)


def _main(argv) -> tuple[int, object]:
    """The exit status and the parsed command line (None for a command that parses its own)."""
    from .errors import HexoError, one_line
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _quick_inspect(argv) or _quick_plugin(argv)
    if args is None:
        p, sub = _parser()
        if not argv or argv[0] not in COMMANDS:
            _plugins(sub)
            cmd = sub.choices.get(argv[0]) if argv else None
            if cmd is not None and cmd.get_default("raw_argv"):
                return cmd.get_default("run")(argv[1:]), None
        args = p.parse_args(argv)
    run = COMMANDS.get(args.cmd) or args.run
    try:
        return run(args), args
    except BrokenPipeError:
        raise
    except Exception as e:          # the boundary: one line, never a traceback
        errors = getattr(args, "errors", ())       # a plug-in's tuple, or what returns one
        known = (HexoError, ValueError, *(errors() if callable(errors) else errors))
        print(f"hexo: error: {one_line(e, args.cmd, known)}", file=sys.stderr)
        return 1, args


if __name__ == "__main__":
    sys.exit(main())
