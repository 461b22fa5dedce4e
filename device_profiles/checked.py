"""Frozen dataclasses that validate themselves on construction, with the standard library only.

The device's run path (``edge run`` on one image) reads two untrusted documents: a bundle's
manifest and a device profile. Both used to be pydantic models; pydantic alone cost a one-image run
~85 ms of CPU and ~11 MiB (scripts/bench_startup.py), so the types a device reads are
:class:`Checked` subclasses instead, checked by the small validator below. pydantic stays a
dependency of the cloud and the converters, and tests/runtime/test_records_differential.py and
tests/device_profiles/test_profiles_differential.py prove that each record accepts, refuses and
normalises as the pydantic model it replaced (where it is stricter is written down there, in
tests/support/differential.py).

A record is a ``@dataclass(frozen=True, init=False, kw_only=True)`` subclass of :class:`Checked`.
Its annotations are its schema; constraints go in ``Annotated[..., Check(ge=1, pattern=...)]``::

    @dataclass(frozen=True, init=False, kw_only=True)
    class FileEntry(Checked):
        sha256: Annotated[str, Check(pattern=r"^[0-9a-f]{64}$")]
        size: Annotated[int, Check(ge=0)]

Construction (``FileEntry(sha256=..., size=3)`` or ``FileEntry.from_dict(data)``) refuses unknown
keys, missing required ones and wrong types, and raises :class:`Invalid` listing every problem with
its location, in pydantic's words (``errors()``/``error_count()`` as a pydantic ValidationError has,
so one formatter serves both). Types understood: ``int``, ``float``, ``str``, ``bool``, ``Any``,
``Literal[...]``, ``X | None`` and unions, ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``,
``dict[str, X]`` and nested checked records.

What a record accepts is what JSON and TOML give natively, stricter than pydantic's lax mode (and
equal to its strict mode on JSON input but for NaN): an ``int`` is an int, never a bool, a float (``1.0``) or a
string (``"1"``); a ``float`` is an int or a finite float (no NaN or infinity, which pydantic
took), never a bool or a string; a ``str`` is a string; a ``bool`` is a bool. JSON lists stand for
tuples (and code may pass a tuple for a list). Writers (``edge bundle``, the converters, the
shipped profiles) only ever write these.

API: ``from_dict``/``from_json`` (validate), ``to_dict(json=..., by_alias=...)``/``to_json``,
``replace(**changes)`` (a validated copy), ``fields_set`` (the fields given explicitly, as
pydantic's ``model_fields_set``), ``field_names()``. Inside a pydantic model (the converters'
options) a record validates through ``from_dict``.

Hooks a record may define: ``_before(cls, data) -> data`` (fills defaults from other keys),
``_check_<field>(cls, value, valid) -> value`` (``valid``: the fields before it that validated, as
pydantic's ``info.data``), and ``_check(self)`` run once every field is valid; the last two raise
ValueError with the message to show.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

__all__ = ["Check", "Checked", "Invalid", "dotted"]

_R = TypeVar("_R", bound="Checked")


@dataclasses.dataclass(frozen=True)
class Check:
    """Constraints on one value: bounds for numbers, lengths and a pattern for strings and lists."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None


class Invalid(ValueError):
    """A record's data does not validate: every problem with its location (``errors()``)."""

    def __init__(self, title: str, errors: list[dict[str, Any]]) -> None:
        self.title = title
        self._errors = errors
        super().__init__(f"{len(errors)} validation error{'s' if len(errors) != 1 else ''} for {title}\n"
                         + "\n".join(f"{dotted(e['loc']) or '(root)'}: {e['msg']}" for e in errors))

    def errors(self, include_url: bool = False) -> list[dict[str, Any]]:
        """Dicts with ``loc`` (tuple of keys and list positions), ``msg``, ``type`` and ``input``."""
        return [dict(e) for e in self._errors]

    def error_count(self) -> int:
        return len(self._errors)


def dotted(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """``("backends", 1)`` -> ``backends[1]``; ``("detect", "models")`` -> ``detect.models``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Error(Exception):
    """One problem at a location below the value being converted (internal)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errs = errors


def _err(kind: str, msg: str, value: Any, loc: tuple[int | str, ...] = ()) -> _Error:
    return _Error([{"type": kind, "loc": loc, "msg": msg, "input": value}])


def _prefixed(errors: list[dict[str, Any]], key: int | str) -> list[dict[str, Any]]:
    return [{**e, "loc": (key, *e["loc"])} for e in errors]


_MISSING: Any = object()


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    key: str  # the name in data (an alias such as the manifest's "schema")
    tp: Any
    default: Any
    factory: Any


class Checked:
    """Base of the self-validating frozen dataclasses (see the module's docstring)."""

    #: data key -> field name, for a field whose name cannot be the key (``schema_``: "schema")
    _aliases: ClassVar[dict[str, str]] = {}
    _schema: ClassVar[tuple[_Field, ...]]
    _fields_set: frozenset[str]

    def __init__(self, **data: Any) -> None:
        try:
            values, given = type(self)._validate(data)
        except _Error as exc:
            raise Invalid(type(self).__name__, exc.errs) from None
        for name, value in values.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_fields_set", frozenset(given))
        try:
            self._check()
        except ValueError as exc:
            raise Invalid(type(self).__name__, [{"type": "value_error", "loc": (), "msg": f"Value error, {exc}",
                                                  "input": data}]) from None

    # -- the API the code uses ----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls: type[_R], data: Any) -> _R:
        """Validate ``data`` (a mapping, e.g. parsed JSON or TOML); raises :class:`Invalid`."""
        if not isinstance(data, Mapping):
            raise Invalid(cls.__name__, [{"type": "model_type", "loc": (), "input": data,
                                          "msg": f"Input should be a valid dictionary or instance of {cls.__name__}"}])
        bad = [k for k in data if not isinstance(k, str)]
        if bad:
            raise Invalid(cls.__name__, [{"type": "extra_forbidden", "loc": (str(k),), "input": data[k],
                                          "msg": "Extra inputs are not permitted"} for k in bad])
        return cls(**data)

    def to_dict(self, *, json: bool = False, by_alias: bool = True) -> dict[str, Any]:
        """Every field, nested checked records as dicts; ``json=True``: tuples as lists (what json.dumps writes)."""
        names = {f: k for k, f in self._aliases.items()} if by_alias else {}
        return {names.get(f.name, f.name): _dump(getattr(self, f.name), json) for f in self._fields()}

    @classmethod
    def from_json(cls: type[_R], text: str | bytes) -> _R:
        """Validate a JSON object (as :meth:`to_json` writes it)."""
        import json

        return cls.from_dict(json.loads(text))

    def to_json(self) -> str:
        """This record as a JSON object (keys by alias, in field order)."""
        import json

        return json.dumps(self.to_dict(json=True))

    def replace(self: _R, **changes: Any) -> _R:
        """A copy with ``changes`` applied, validated again; the fields set stay set."""
        data = {f.name: getattr(self, f.name) for f in self._fields() if f.name in self._fields_set}
        return type(self)(**{**data, **changes})

    @property
    def fields_set(self) -> frozenset[str]:
        """The fields given explicitly when this record was made (not left to their defaults)."""
        return self._fields_set

    @classmethod
    def field_names(cls) -> list[str]:
        """The keys a mapping for this record may have, in order."""
        return [f.key for f in cls._fields()]

    @classmethod
    def field_type(cls, key: str) -> Any:
        """The annotation of the field named ``key`` in data (None if there is none)."""
        return next((f.tp for f in cls._fields() if f.key == key), None)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """In a pydantic model (the converters' options), a record validates as itself: pydantic
        would otherwise fill the dataclass's fields without its checks."""
        from pydantic_core import core_schema

        def validate(value: Any) -> Any:
            return value if isinstance(value, cls) else cls.from_dict(value)

        def serialize(value: Checked, info: Any) -> Any:
            return value.to_dict(json=info.mode == "json")

        return core_schema.no_info_plain_validator_function(
            validate, serialization=core_schema.plain_serializer_function_ser_schema(serialize, info_arg=True))

    # -- hooks --------------------------------------------------------------------------------------------

    @classmethod
    def _before(cls, data: dict[str, Any]) -> dict[str, Any]:
        return data

    def _check(self) -> None:
        """Checks across fields, once every field is valid; raise ValueError."""

    # -- validation ---------------------------------------------------------------------------------------

    @classmethod
    def _fields(cls) -> tuple[_Field, ...]:
        schema = cls.__dict__.get("_schema")
        if schema is None:
            hints = typing.get_type_hints(cls, include_extras=True)
            by_name = {v: k for k, v in cls._aliases.items()}
            schema = tuple(
                _Field(f.name, by_name.get(f.name, f.name), hints[f.name],
                       f.default, f.default_factory)
                for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            )
            cls._schema = schema
        return schema

    @classmethod
    def _validate(cls, data: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        data = cls._before(dict(data))
        fields = cls._fields()
        given_as: dict[str, str] = {}  # alias -> the field's own name, when data used that instead
        for alias, name in cls._aliases.items():
            if name in data and alias not in data:  # the field's own name stands for its alias too
                data[alias] = data.pop(name)
                given_as[alias] = name
        known = {f.key for f in fields}
        errors: list[dict[str, Any]] = []
        values: dict[str, Any] = {}
        valid: dict[str, Any] = {}
        for f in fields:
            if f.key not in data:
                if f.default is not dataclasses.MISSING:
                    values[f.name] = valid[f.name] = f.default
                elif f.factory is not dataclasses.MISSING:
                    values[f.name] = valid[f.name] = f.factory()
                else:
                    errors.append({"type": "missing", "loc": (f.key,), "msg": "Field required", "input": data})
                continue
            try:
                value = _convert(f.tp, data[f.key])
                hook = getattr(cls, f"_check_{f.name.rstrip('_')}", None)
                if hook is not None:
                    try:
                        value = hook(value, valid)
                    except ValueError as exc:
                        raise _err("value_error", f"Value error, {exc}", data[f.key]) from None
            except _Error as exc:
                errors.extend(_prefixed(exc.errs, given_as.get(f.key, f.key)))
                continue
            values[f.name] = valid[f.name] = value
        errors.extend({"type": "extra_forbidden", "loc": (k,), "msg": "Extra inputs are not permitted",
                       "input": data[k]} for k in data if k not in known)
        if errors:
            raise _Error(errors)
        return values, {f.name for f in fields if f.key in data}


def _dump(value: Any, json: bool) -> Any:
    if isinstance(value, Checked):
        return value.to_dict(json=json)
    if isinstance(value, dict):
        return {k: _dump(v, json) for k, v in value.items()}
    if isinstance(value, list):
        return [_dump(v, json) for v in value]
    if isinstance(value, tuple):
        items = [_dump(v, json) for v in value]
        return items if json else tuple(items)
    if json and isinstance(value, float) and not math.isfinite(value):
        return None  # NaN and infinities are no JSON: null, as pydantic writes them
    return value


# -- converting one value to its annotation ------------------------------------------------------------------

_UNION_TYPES: tuple[Any, ...] = (Union, types.UnionType)


def _convert(tp: Any, value: Any) -> Any:
    check: Check | None = None
    if get_origin(tp) is Annotated:
        tp, *meta = get_args(tp)
        check = next((m for m in meta if isinstance(m, Check)), None)
    value = _convert_type(tp, value)
    if check is not None:
        _apply(check, tp, value)
    return value


def _convert_type(tp: Any, value: Any) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if tp is int:
        return _int(value)
    if tp is float:
        return _float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _err("string_type", "Input should be a valid string", value)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _err("bool_type", "Input should be a valid boolean", value)
        return value
    if tp is type(None) or tp is None:
        if value is not None:
            raise _err("none_required", "Input should be None", value)
        return None
    if origin is Literal:
        return _literal(get_args(tp), value)
    if origin in _UNION_TYPES:
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        options = tuple(o for o in options if o is not type(None))
        if len(options) == 1:
            return _convert(options[0], value)
        errors: list[dict[str, Any]] = []
        for option in options:
            try:
                return _convert(option, value)
            except _Error as exc:
                errors.extend(_prefixed(exc.errs, _union_tag(option)))
        raise _Error(errors)
    if origin is list:
        if not isinstance(value, list | tuple):  # a tuple only from code: JSON and TOML have none
            raise _err("list_type", "Input should be a valid list", value)
        return _items(get_args(tp)[0], value, list)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _err("tuple_type", "Input should be a valid tuple", value)
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return _items(args[0], value, tuple)
        return _fixed_tuple(args, value)
    if origin is dict:
        if not isinstance(value, dict):
            raise _err("dict_type", "Input should be a valid dictionary", value)
        key_tp, item_tp = get_args(tp)
        out: dict[Any, Any] = {}
        errors = []
        for k, v in value.items():
            try:
                out[_convert(key_tp, k)] = _convert(item_tp, v)
            except _Error as exc:
                errors.extend(_prefixed(exc.errs, k))
        if errors:
            raise _Error(errors)
        return out
    if isinstance(tp, type) and issubclass(tp, Checked):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _err("model_type", f"Input should be a valid dictionary or instance of {tp.__name__}", value)
        try:
            return tp.from_dict(value)
        except Invalid as exc:
            raise _Error(exc.errors()) from None
    raise TypeError(f"checked records do not support the annotation {tp!r}")


def _union_tag(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return f"literal[{','.join(repr(a) for a in get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise _err("int_type", "Input should be a valid integer, got a boolean", value)
    if isinstance(value, int) or (isinstance(value, numbers.Integral) and not isinstance(value, str)):
        return int(value)  # numbers.Integral: numpy's integers, when code (never a document) makes a record
    if isinstance(value, float):
        if value.is_integer():
            raise _err("int_type", "Input should be a valid integer, not a float", value)
        raise _err("int_from_float", "Input should be a valid integer, got a number with a fractional part", value)
    if isinstance(value, str):
        try:
            int(value.strip())
        except ValueError:
            raise _err("int_parsing", "Input should be a valid integer, unable to parse string as an integer",
                       value) from None
        raise _err("int_type", "Input should be a valid integer, not a string", value)
    raise _err("int_type", "Input should be a valid integer", value)


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise _err("float_type", "Input should be a valid number, got a boolean", value)
    if isinstance(value, int | float | numbers.Real):  # numbers.Real: numpy's floats and integers
        try:
            number = float(value)
        except OverflowError:
            raise _err("float_type", "Input should be a valid number, too large", value) from None
        if not math.isfinite(number):  # NaN passes no range check and poisons every pixel it touches
            raise _err("finite_number", "Input should be a finite number", value)
        return number
    if isinstance(value, str):
        try:
            float(value.strip())
        except ValueError:
            raise _err("float_parsing", "Input should be a valid number, unable to parse string as a number",
                       value) from None
        raise _err("float_type", "Input should be a valid number, not a string", value)
    raise _err("float_type", "Input should be a valid number", value)


def _literal(choices: tuple[Any, ...], value: Any) -> Any:
    for choice in choices:
        # type-exact: True is no 1 and 1 no True (as pydantic compares literals)
        if type(value) is type(choice) and value == choice:
            return choice
    shown = [repr(c) for c in choices]
    expected = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
    raise _err("literal_error", f"Input should be {expected}", value)


def _items(tp: Any, value: list[Any] | tuple[Any, ...], kind: type) -> Any:
    out = []
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        try:
            out.append(_convert(tp, item))
        except _Error as exc:
            errors.extend(_prefixed(exc.errs, i))
    if errors:
        raise _Error(errors)
    return kind(out)


def _fixed_tuple(args: tuple[Any, ...], value: list[Any] | tuple[Any, ...]) -> tuple[Any, ...]:
    if len(value) > len(args):
        raise _err("too_long", f"Tuple should have at most {len(args)} item{'s' if len(args) != 1 else ''} "
                   f"after validation, not {len(value)}", value)
    out = []
    errors: list[dict[str, Any]] = []
    for i, tp in enumerate(args):
        if i >= len(value):
            errors.append({"type": "missing", "loc": (i,), "msg": "Field required", "input": value})
            continue
        try:
            out.append(_convert(tp, value[i]))
        except _Error as exc:
            errors.extend(_prefixed(exc.errs, i))
    if errors:
        raise _Error(errors)
    return tuple(out)


def _apply(check: Check, tp: Any, value: Any) -> None:
    if value is None:
        return
    for bound, ok, words in (("ge", lambda v, b: v >= b, "greater than or equal to"),
                             ("gt", lambda v, b: v > b, "greater than"),
                             ("le", lambda v, b: v <= b, "less than or equal to"),
                             ("lt", lambda v, b: v < b, "less than")):
        limit = getattr(check, bound)
        if limit is not None and not ok(value, limit):
            raise _err(f"{'greater' if bound[0] == 'g' else 'less'}_than{'_equal' if bound[1] == 'e' else ''}",
                       f"Input should be {words} {_num(limit)}", value)
    if check.min_length is not None or check.max_length is not None:
        what, unit = ("String", "character") if isinstance(value, str) else \
            ("Tuple" if isinstance(value, tuple) else "List", "item")
        after = "" if isinstance(value, str) else " after validation"
        if check.min_length is not None and len(value) < check.min_length:
            n = check.min_length
            raise _err("too_short" if unit == "item" else "string_too_short",
                       f"{what} should have at least {n} {unit}{'s' if n != 1 else ''}{after}"
                       + ("" if unit == "character" else f", not {len(value)}"), value)
        if check.max_length is not None and len(value) > check.max_length:
            n = check.max_length
            raise _err("too_long" if unit == "item" else "string_too_long",
                       f"{what} should have at most {n} {unit}{'s' if n != 1 else ''}{after}"
                       + ("" if unit == "character" else f", not {len(value)}"), value)
    if check.pattern is not None and not _compiled(check.pattern).search(value):
        raise _err("string_pattern_mismatch", f"String should match pattern '{check.pattern}'", value)


def _num(limit: float) -> str:
    return str(int(limit)) if float(limit).is_integer() else str(limit)


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    if pattern not in _PATTERNS:
        # pydantic's (Rust) regex: "$" matches at the very end only, never before a final newline
        _PATTERNS[pattern] = re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern)
    return _PATTERNS[pattern]
