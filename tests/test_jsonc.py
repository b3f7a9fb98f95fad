"""hexo.jsonc against the json package it stands in for: the same objects and text for what
it accepts, the json package's own error (type and message) for what it refuses."""

import json

import pytest

from hexo import jsonc

DOCUMENTS = ['{"a": [1, 2.5, -3e10, true, false, null, "x\\u00e9\\n"], "b": {}}', " [] ", '"s"',
             "1", "[NaN, Infinity, -Infinity]", '\t{"k" : 1}\n', b'{"a": 1}', '{"a":1, "a":2}',
             '"\\ud800"', b'\xef\xbb\xbf{"a": 1}', '{"a": 1}'.encode("utf-16"),
             '{"a": 1} x', '{"a": "x', "", "   ", "[1,]", '{"a" 1}', "\ufeff{}", "1 2", b"\xff", "[" * 5 + "]"]


def _outcome(function, value):
    try:
        return "ok", repr(function(value))
    except Exception as e:
        return type(e), str(e)


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_loads_is_json_loads(doc):
    assert _outcome(jsonc.loads, doc) == _outcome(json.loads, doc)


def test_a_refusal_before_json_is_imported_is_json_s_own():
    """The C scanner raises some of its errors only once json.decoder is imported."""
    import subprocess
    import sys
    code = ("from hexo import jsonc\ntry:\n    jsonc.loads('{\"a\": \"x')\n"
            "except ValueError as e:\n    print(type(e).__name__, e)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.stdout == "JSONDecodeError Unterminated string starting at: line 1 column 7 " \
                       "(char 6)\n", p.stderr


def _circular():
    c = []
    c.append(c)
    return c


OBJECTS = [{"a": [1, 2.5, float("nan"), None, True, "é\n\0"], 3: "int key", 1.5: "f", None: 1,
            True: 2}, "str", 1, [], {}, (1, 2), float("inf"), 10 ** 30, {"x": object()},
           {(1, 2): 1}, _circular(), {"nested": [{"deep": [[]]}] * 3}]


@pytest.mark.parametrize("obj", OBJECTS, ids=range(len(OBJECTS)))
def test_dumps_is_json_dumps(obj):
    assert _outcome(jsonc.dumps, obj) == _outcome(json.dumps, obj)


def test_a_real_manifest_reads_the_same(images):
    from hexo.image import Image
    img = Image(images.get("hello"))
    raw = img.payload("manifest")
    assert jsonc.loads(raw) == json.loads(raw) == img.manifest
    assert jsonc.dumps(img.manifest) == json.dumps(img.manifest)
