"""Differential checks of a stdlib record (device_profiles.checked) against the pydantic model it
replaced (tests/support/pydantic_mirrors.py): hostile documents made by mutating valid ones.

What the device accepts, decided on 2026-12-01 and checked here:

- equal to the pydantic model in strict mode on JSON input: an int is a JSON integer (never
  ``true``, ``1.0`` or ``"1"``), a float a JSON number (never ``true`` or ``"1.5"``), a string a
  JSON string, a bool ``true``/``false``;
- stricter than pydantic in one more way: NaN and infinities (which Python's json module reads)
  are no float (pydantic took NaN for a mean, a scale, a threshold without bounds). On a document
  holding one, a record that refuses it must name a ``finite_number`` error; a record that accepts
  it (NaN inside ``metrics``, typed Any) must agree with lax pydantic;
- stricter than pydantic's lax mode (the old device behaviour) only there: whatever a record
  accepts, the lax model accepts with the same value. No writer (``edge bundle``, make_bundle, the
  converters, the shipped profiles) writes a coerced type: they dump the same records;
- pydantic's JSON parser refuses a large integer (10**18) for a float, which its lax mode (the old
  device) took as a float: a record takes it too;
- a pydantic error that was not a ValidationError (the old manifest's head defaults raised
  TypeError on an unhashable ``head``, a crash while opening a bundle) counts as a refusal.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from typing import Any

from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from device_profiles.checked import Checked, Invalid

__all__ = ["Outcome", "assert_same", "mutated", "outcome_pydantic", "outcome_record"]

#: values a hostile document puts anywhere: wrong types, edges of every range, coercible strings,
#: unsafe file names, names of real choices in the wrong place
HOSTILE: list[Any] = [
    None, True, False, 0, 1, -1, 2, 3, 4, 5, 16, 64, 114, 255, 256, 1024, 1025, 8192, 8193, 10_000, 10_001,
    2**31 - 1, 2**31, 2**63, -(2**63), 10**400,
    0.0, -0.0, 1.0, 0.5, 1.5, 0.25, 1e308, 1e-320, float("nan"), float("inf"), float("-inf"),
    "", " ", "1", "1.0", "true", "auto", "x", "a\n", "abc\n", "A", "model.tflite", "labels.txt",
    "samples/a.png", "../x", "/etc/passwd", "a/../b", "a//b", "./a", "a/", "a\\b", "a\x00b", "C:\\x",
    "manifest.json", "manifest.sig", "ssd", "yolo", "yolov5", "xyxy", "pixels", "NHWC", "NC", "image",
    "none", "letterbox", "center-crop", "bgr", "area", "int8", "fp16", "Linux", "litert", "Not A Name",
    "usb", "aarch64", "3.11", "3", "0" * 64, "f" * 64, "F" * 64, "0" * 63, "x" * 129, "rpi-4b",
    [], [1], [1, 2], [224, 224], [0, 224], [1, 2, 3], [8193, 1], [-1, 224, 224, 3], [1, 84, 8400],
    [1.0], [0.0], [127.5, 127.5, 127.5], ["a"], ["", "b"], ["litert", "litert"], [True], [None],
    {}, {"a": 1}, {"sha256": "0" * 64, "size": 1}, {"sha256": "0" * 64, "size": -1},
    {"scale": 0.5, "zero_point": 0}, {"scale": 0, "zero_point": 0},
    {"systems": ["Linux"], "models": [], "fallback": True},
]


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated(draw: st.DrawFn, bases: Sequence[dict[str, Any]], keys: Sequence[str]) -> Any:
    """A base document with one to four changes: a value replaced (hostile, random or a value from
    elsewhere in the document), a key deleted, or a key added (a known one in the wrong place or
    an unknown one)."""
    doc: Any = copy.deepcopy(draw(st.sampled_from(list(bases))))
    values = st.one_of(st.sampled_from(HOSTILE), st.integers(), st.floats(), st.text(max_size=6),
                       st.lists(st.integers(-2, 300), max_size=4))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(list(_paths(doc))))
        action = draw(st.sampled_from(["set", "set", "set", "delete", "add", "swap"]))
        if action == "swap":
            other = draw(st.sampled_from(list(_paths(doc))))
            value: Any = copy.deepcopy(_at(doc, other))
        else:
            value = copy.deepcopy(draw(values))  # never the shared HOSTILE object itself
        if not path:
            if action == "add" and isinstance(doc, dict):
                doc[draw(st.sampled_from([*keys, "extra", "schema_", "Name"]))] = value
            elif action != "delete":
                doc = value
            continue
        parent, last = _at(doc, path[:-1]), path[-1]
        if action == "delete" and isinstance(parent, dict):
            del parent[last]
        elif action == "add" and isinstance(_at(doc, path), dict):
            _at(doc, path)[draw(st.sampled_from([*keys, "extra"]))] = value
        else:
            parent[last] = value
    return doc


Outcome = tuple[str, Any]


def _canon(data: dict[str, Any], doc: Any, volatile: Sequence[str]) -> str:
    data = {k: v for k, v in data.items() if not (k in volatile and k not in doc)}
    return json.dumps(data, sort_keys=True)


def _locs(errors: list[dict[str, Any]]) -> list[str]:
    return sorted({".".join(str(p) for p in e["loc"]) for e in errors})


def _messages(errors: list[dict[str, Any]]) -> list[str]:
    """The messages that must read the same: the model's own checks, choices, ranges, patterns,
    missing and unknown keys (a type error's wording may differ: strict pydantic does not say why)."""
    same = ("value_error", "literal_error", "greater_than", "greater_than_equal", "less_than",
            "less_than_equal", "string_pattern_mismatch", "missing", "extra_forbidden", "too_short",
            "string_too_short", "string_too_long")
    return sorted({f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors if e["type"] in same})


def outcome_record(cls: type[Checked], doc: Any, volatile: Sequence[str] = ()) -> Outcome:
    data = json.loads(json.dumps(doc))  # what json.loads gives a device
    try:
        return "ok", _canon(cls.from_dict(data).to_dict(json=True), doc, volatile)
    except Invalid as exc:
        finite = any(e["type"] == "finite_number" for e in exc.errors())
        return "error", (_locs(exc.errors()), _messages(exc.errors()), finite)


def outcome_pydantic(model: type[BaseModel], doc: Any, *, strict: bool, volatile: Sequence[str] = ()) -> Outcome:
    try:
        if strict:
            m = model.model_validate_json(json.dumps(doc), strict=True)
        else:
            m = model.model_validate(json.loads(json.dumps(doc)))
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # pydantic also reports a list that has bad items as too short when too few items are valid
        # ("Tuple should have at least 1 item after validation, not 0" for backends = [0]); a record
        # names the bad items only
        errors = [e for e in errors if not (e["type"] == "too_short" and any(
            len(o["loc"]) > len(e["loc"]) and o["loc"][:len(e["loc"])] == e["loc"] for o in errors))]
        if strict:
            # pydantic's JSON parser refuses a large integer (10**18) for a float, which the lax mode
            # (the old device) took as that float: judge the document with those floats written in
            big = [e for e in errors if e["type"] == "float_type" and isinstance(e["input"], int)
                   and 2**53 < abs(e["input"]) < 2**1023]  # (beyond: no float, and lax refused it too)
            if big:
                fixed = json.loads(json.dumps(doc))
                for e in big:
                    _at(fixed, e["loc"][:-1])[e["loc"][-1]] = float(e["input"])
                return outcome_pydantic(model, fixed, strict=True, volatile=volatile)
        return "error", (_locs(errors), _messages(errors), False)
    except TypeError:
        return "error", None  # a crash of the old model (see the module's docstring)
    return "ok", _canon(m.model_dump(mode="json", by_alias=True), doc, volatile)


def assert_same(cls: type[Checked], model: type[BaseModel], doc: Any, volatile: Sequence[str] = ()) -> Outcome:
    """The record and the strict pydantic model agree on ``doc`` (accepted with equal values, or
    refused at the same keys with the same messages); whatever the record accepts, the lax model
    accepts as the same value."""
    mine = outcome_record(cls, doc, volatile)
    strict = outcome_pydantic(model, doc, strict=True, volatile=volatile)
    if mine[0] == "error" and mine[1][2]:
        pass  # refused for a NaN or an infinity (see the module's docstring)
    elif strict[1] is None:  # the old model crashed: the record must refuse
        assert mine[0] == "error", (doc, mine)
    else:
        assert mine == strict, f"\n  document: {doc!r}\n  record:   {mine}\n  pydantic: {strict}"
    if mine[0] == "ok":
        lax = outcome_pydantic(model, doc, strict=False, volatile=volatile)
        assert lax == mine, f"\n  document: {doc!r}\n  record: {mine}\n  lax pydantic: {lax}"
    return mine
