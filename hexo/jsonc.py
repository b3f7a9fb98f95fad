"""json.loads and json.dumps, with their default options, straight through the standard
library's own C scanner and encoder (the `_json` module that the json package drives).

The json package imports re, and re imports enum, functools and collections: ~6 ms of CPU,
half of what `hexo inspect` or `hexo status` costs beyond the interpreter's own start, for
commands that parse one small document. The C parts are what json itself uses for these
defaults, so the results are the same objects and the same text. Anything they refuse is
handed to the json package, which raises its own error with its own message.
"""

from _json import encode_basestring_ascii, make_encoder, make_scanner


class _Options:
    """What the C scanner reads from json.JSONDecoder: json.loads's defaults."""
    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__


_scan = make_scanner(_Options)
_WHITESPACE = " \t\n\r"


def loads(data: str | bytes):
    """json.loads(data)."""
    try:
        # UTF-8, as every document hexo writes; json.loads also detects UTF-16 and -32
        text = data if isinstance(data, str) else data.decode("utf-8")
        value, end = _scan(text, len(text) - len(text.lstrip(_WHITESPACE)))
        if not text[end:].strip(_WHITESPACE):
            return value
    except (ValueError, StopIteration, SystemError):
        pass        # SystemError: the scanner's errors need json.decoder imported to be raised
    import json                                  # the exact error, with its message
    return json.loads(data)


def _unserializable(obj):
    raise TypeError


def dumps(obj) -> str:
    """json.dumps(obj)."""
    if isinstance(obj, str):
        return encode_basestring_ascii(obj)
    try:
        return "".join(make_encoder({}, _unserializable, encode_basestring_ascii, None, ": ",
                                    ", ", False, False, True)(obj, 0))
    except (TypeError, ValueError, RecursionError):
        import json
        return json.dumps(obj)
