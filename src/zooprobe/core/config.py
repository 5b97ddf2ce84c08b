"""The one strict parser of configuration dataclasses (every config of zooprobe is built from dicts here).

Why strict: configs are saved next to zoos, encoders and runs, and the field notes warn that encoding with
preprocessing that differs from pretraining (token size, normalization) silently degrades results. A
misspelled key must fail loudly, naming the field (and the closest known one), instead of quietly falling
back to a default. `dataclass_from_dict` builds nested config dataclasses from nested mappings and turns
lists into tuples where a field is a tuple (YAML has no tuples); ``require_all=True`` (saved encoder and
tokenizer configs) also refuses a missing field, which means the dict came from another version.
`check_field_types` checks scalar annotations (bool, int, float, str, Literal) in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin

from zooprobe.core.files import parse_json
from zooprobe.errors import ConfigError

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


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass `tp` is, or is optional of (``HeadConfig``, ``EncoderConfig | None``), else None."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    inner = [a for a in get_args(tp) if a is not type(None)]
    if len(inner) == 1 and dataclasses.is_dataclass(inner[0]) and isinstance(inner[0], type):
        return inner[0]
    return None


def _is_tuple(tp: Any) -> bool:
    return tp is tuple or get_origin(tp) is tuple or any(_is_tuple(a) for a in get_args(tp) if a is not tp)


def dataclass_from_dict(
    cls: type[_C], data: object, error: type[ValueError], *, require_all: bool = True
) -> _C:
    """Build `cls` from a mapping of its field names (see the module docs).

    Unknown keys are errors (usually a typo of a real one, whose default would then be used silently);
    with ``require_all`` missing keys are errors too. Fields typed as config dataclasses are built from
    nested mappings the same way; lists become tuples for tuple fields.
    """
    name = cls.__name__
    if not isinstance(data, Mapping):
        raise error(f"{name}: expected a mapping of field names to values, got {_describe(data)}")
    known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = [key for key in data if key not in known]
    if unknown:
        hint = _did_you_mean(str(unknown[0]), known)
        raise error(f"{name}: unknown field(s) {unknown}{hint}; known fields are {known}")
    missing = [key for key in known if key not in data]
    if require_all and missing:
        raise error(f"{name}: missing field(s) {missing}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = dict(data)
    for key, value in kwargs.items():
        nested = _dataclass_in(hints[key])
        if nested is not None and isinstance(value, Mapping):
            try:
                kwargs[key] = dataclass_from_dict(nested, value, error, require_all=require_all)
            except error as e:
                raise error(f"{name}.{key}: {e}") from None
        elif isinstance(value, list) and _is_tuple(hints[key]):
            kwargs[key] = tuple(value)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a value the dataclass itself refuses
        raise error(f"{name}: {e}") from e


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def check_record(
    data: object,
    what: str,
    error: type[Exception],
    *,
    fields: Iterable[str],
    exact: bool = False,
    version: object = None,
    version_key: str = "format_version",
) -> Mapping[str, Any]:
    """`data` if it is a saved record (a mapping) with the `fields` (``exact``: only those) and, when a
    `version` is given, that format version; otherwise `error` naming `what` and the problem."""
    if not isinstance(data, Mapping):
        raise error(f"{what}: expected a mapping, got {type(data).__name__}")
    if version is not None and version_key in data and data[version_key] != version:  # first: other
        raise error(  # versions differ in their fields too
            f"{what}: {version_key} {data[version_key]!r} is not supported (this zooprobe reads version "
            f"{version}); upgrade zooprobe or save it again"
        )
    fields = list(fields)
    if exact and set(data) != set(fields):
        raise error(f"{what}: expected fields {sorted(fields)}, got {sorted(map(str, data))}")
    missing = [name for name in fields if name not in data]
    if missing:
        raise error(f"{what}: missing field(s) {missing}")
    return data


def requirement(owner: str, error: type[ValueError]) -> Callable[[bool, str], None]:
    """``need(condition, message)`` for a config's `validate`: a false condition raises `error` with
    ``"OWNER: message"`` (``owner`` may be empty)."""

    def need(condition: bool, message: str) -> None:
        if not condition:
            raise error(f"{owner}: {message}" if owner else message)

    return need


class _ConfigMethods:
    """The methods `config` gives a config dataclass (kept off its bases: jsonargparse builds pure dataclasses
    as nested options, but a dataclass with a non-dataclass base as a subclass choice)."""

    config_error: ClassVar[type[ValueError]]
    require_all: ClassVar[bool]

    def to_dict(self) -> dict[str, Any]:
        """Every field, nested configs as dicts, tuples as lists (JSON and YAML ready)."""
        return _plain(dataclasses.asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: object) -> Any:
        """Strict inverse of `to_dict` (`dataclass_from_dict`)."""
        return dataclass_from_dict(cls, data, cls.config_error, require_all=cls.require_all)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Any:
        try:
            data = parse_json(text)
        except json.JSONDecodeError as exc:
            raise cls.config_error(f"{cls.__name__}: invalid JSON ({exc})") from exc
        return cls.from_dict(data)

    def preset_values(self, presets: Mapping[str, Mapping[str, Any]], what: str) -> dict[str, Any]:
        """Every field's value, ``None`` ones taken from the preset this config names (``self.preset``)."""
        preset = getattr(self, "preset")  # noqa: B009 - configs with presets have the field
        if preset not in presets:
            choices = ", ".join(presets)
            raise ConfigError(f"unknown preset {preset!r} of {what} configs; choose one of {choices}")
        base = presets[preset]
        return {
            f.name: getattr(self, f.name) if getattr(self, f.name) is not None else base.get(f.name)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        }


def config(
    error: type[ValueError] = ConfigError, *, require_all: bool = False
) -> Callable[[type[_C]], type[_C]]:
    """Class decorator for config dataclasses (put it above ``@dataclass``): adds `to_dict`, strict
    `from_dict` (unknown fields are `error`s; with ``require_all``, missing ones too: saved encoder and
    tokenizer configs; without it, omitted fields take their defaults: configs users write), `to_json`,
    `from_json` and `preset_values`. Methods the class defines itself are kept."""

    def decorate(cls: type[_C]) -> type[_C]:
        cls.config_error = error  # type: ignore[attr-defined]
        cls.require_all = require_all  # type: ignore[attr-defined]
        for name, value in vars(_ConfigMethods).items():
            method = callable(value) or isinstance(value, classmethod)
            if method and name not in vars(cls) and not name.startswith("__"):
                setattr(cls, name, value)
        return cls

    return decorate
