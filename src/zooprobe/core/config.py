"""Strict dataclass <-> dict helpers shared by the tokenizer and encoder configs.

Why strict: configs are saved next to trained encoders, and the field notes warn that encoding with
preprocessing that differs from pretraining (token size, normalization) silently degrades results. A
misspelled, missing or mistyped key in a saved config must therefore fail loudly, naming the field, instead
of quietly falling back to a default. Only the annotation types the configs use are supported (bool, int,
float, str, Literal); anything else is a programming error and raises `TypeError`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

_C = TypeVar("_C")


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def check_field_types(obj: object, error: type[ValueError]) -> None:
    """Check every field of the dataclass instance `obj` against its annotation, in place.

    An int given for a float field is converted to float (so `dropout=0` and `dropout=0.0` serialise the
    same); bools are never accepted as numbers because `True` for `token_size` is always a mistake.
    """
    owner = type(obj).__name__
    hints = typing.get_type_hints(type(obj))
    for field in dataclasses.fields(obj):  # type: ignore[arg-type]
        tp = hints[field.name]
        value = getattr(obj, field.name)
        where = f"{owner}.{field.name}"
        if get_origin(tp) is Literal:
            allowed = get_args(tp)
            if not isinstance(value, str) or value not in allowed:
                raise error(f"{where}: expected one of {list(allowed)}, got {_describe(value)}")
        elif tp is bool:
            if not isinstance(value, bool):
                raise error(f"{where}: expected a bool, got {_describe(value)}")
        elif tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise error(f"{where}: expected an int, got {_describe(value)}")
        elif tp is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise error(f"{where}: expected a float, got {_describe(value)}")
            object.__setattr__(obj, field.name, float(value))
        elif tp is str:
            if not isinstance(value, str):
                raise error(f"{where}: expected a str, got {_describe(value)}")
        else:  # pragma: no cover - guards against adding a field type this helper cannot check
            raise TypeError(f"{where}: unsupported annotation {tp!r}")


def dataclass_from_dict(cls: type[_C], data: object, error: type[ValueError]) -> _C:
    """Build `cls` from a mapping that must name every field exactly once, with the right types.

    Unknown and missing keys are both errors: an unknown key is usually a typo of a real one (whose
    default would then be used silently), and a missing key means the dict came from another version.
    """
    name = cls.__name__
    if not isinstance(data, Mapping):
        raise error(f"{name}: expected a mapping of field names to values, got {_describe(data)}")
    known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = [key for key in data if key not in known]
    if unknown:
        raise error(f"{name}: unknown field(s) {unknown}; known fields are {known}")
    missing = [key for key in known if key not in data]
    if missing:
        raise error(f"{name}: missing field(s) {missing}")
    kwargs: dict[str, Any] = dict(data)
    return cls(**kwargs)
