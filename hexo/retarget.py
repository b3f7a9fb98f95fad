"""A checkpoint's content re-expressed for another ISA: the stack and registers go through
the transform core, every other area stays as it is (one layout on both ISAs)."""

from __future__ import annotations

import time
import weakref

from .image import Image, ImageError
from .transform import TransformError, transform

# Per image, its ISAs' metadata as loaded once: a live migration loads it before the guest
# stops (Migrator.arm), so the transform phase is the transform alone.
_loaded: "weakref.WeakKeyDictionary[Image, dict]" = weakref.WeakKeyDictionary()


def metadata(image: Image, isa: str):
    loaded = _loaded.setdefault(image, {})
    if isa not in loaded:
        from .toolchain import stackmaps
        name = f"meta.{isa}"
        if name not in image.entries:
            raise ImageError(f"{image.path} has no {isa} migration metadata: it was "
                             f"built with --no-migratable")
        loaded[isa] = stackmaps.load(image.payload(name))
    return loaded[isa]


def kept_source(state: dict, areas: list[tuple[str, int, bytes]], to_isa: str):
    """What a checkpoint for `to_isa` keeps of the untransformed job (checkpoint.write's
    `kept`): the source registers and the stack the transform rewrites; None when nothing
    is transformed."""
    if state["isa"] == to_isa:
        return None
    return ({"isa": state["isa"], "context": state["context"]},
            [a for a in areas if a[0] == "stack"])


def retarget(state: dict, areas: list[tuple[str, int, bytes]], image: Image, to_isa: str):
    """(state, areas) of a checkpoint, rewritten so that it resumes on `to_isa`."""
    if state["isa"] == to_isa:
        return state, areas
    t0 = time.perf_counter()
    stacks = [a for a in areas if a[0] == "stack"]
    if len(stacks) != 1:
        raise TransformError("a checkpoint needs exactly one stack area to be transformed")
    _, start, data = stacks[0]
    src, dst = metadata(image, state["isa"]), metadata(image, to_isa)
    try:
        result = transform(src, dst, state["context"], start, bytes(data))
    except (KeyError, IndexError, TypeError, ValueError, OverflowError, StopIteration):
        # The transform validates what it reads; reaching here means metadata and state
        # disagree in a way it does not yet name. The job stays where it is.
        raise TransformError(f"the {state['isa']} state does not match the image's migration "
                             f"metadata (a hexo defect); the job was not moved") from None
    new_state = dict(state, isa=to_isa, target_isa=to_isa, context=result.context,
                     transformed={"from": state["isa"], "frames": result.frames,
                                  "ms": round(1e3 * (time.perf_counter() - t0), 3)})
    new_areas = [a for a in areas if a[0] != "stack"] + [("stack", result.stack_start,
                                                          result.stack)]
    return new_state, new_areas
