"""Checked parameter classes: the base of every step's parameters and of the config's sections.

A parameter class is a frozen dataclass deriving from `Params`. It names its config section
(`SECTION`, e.g. "trainer") and holds one check per field in `CHECKS` (field name -> a `Check`).
Building an instance checks every field: first its type (from the annotation: bool, int, float,
str, tuple, dict, a nested Params class, or `X | None`; an int is accepted where a float goes),
then its check, then `validate()` (relations between fields). Any problem raises ConfigError
with one line naming the config key, e.g.

    config key trainer.optimizer: must be one of adam, sgd, got 'rmsprop'

so an instance that exists is a valid one, and an executor handed one relies on it. A class
whose field has no entry in CHECKS cannot be instantiated (TypeError), so a new setting cannot
slip through unchecked; `ANY` marks a field where every value of its type is valid, and
`IN_VALIDATE` one whose rule depends on other fields (checked in `validate()`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NoReturn, TypeVar

from pipeline.core.errors import ConfigError

# check(value) -> None when the (type-checked) value is fine, else why not ("must be >= 1").
Check = Callable[[Any], "str | None"]
P = TypeVar("P", bound="Params")


def ANY(value: Any) -> str | None:
    """The check of a field where every value of its type is valid (its type is still checked)."""
    del value
    return None


def IN_VALIDATE(value: Any) -> str | None:
    """The check of a field whose rule depends on other fields: the class's `validate()` checks
    it (its type is still checked here)."""
    del value
    return None


def at_least(low: float) -> Check:
    """value >= low."""
    return lambda value: None if value >= low else f"must be >= {low:g}, got {value!r}"


def in_range(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Check:
    """low <= value <= high (either end open when asked); NaN is never in range."""
    shown = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def check(value: Any) -> str | None:
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        nan = isinstance(value, float) and math.isnan(value)
        return None if above and below and not nan else f"must be in {shown}, got {value!r}"

    return check


def one_of(choices: Sequence[str]) -> Check:
    """value is one of `choices`."""
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}, got {value!r}"


def unset_or(check: Check) -> Check:
    """None (the setting is off), or a value `check` accepts ("must be >= 1 or unset, got 0")."""

    def optional(value: Any) -> str | None:
        if value is None:
            return None
        problem = check(value)
        return problem.replace(", got ", " or unset, got ", 1) if problem else None

    return optional


def local_path(*, required: bool) -> Check:
    """A local file system path (no "scheme://"); non-empty when `required`."""

    def check(value: str) -> str | None:
        if required and not value:
            return "must name a local path, got ''"
        if "://" in value:
            return f"only local paths are supported, got {value!r}"
        return None

    return check


def describing_type(check: Check) -> Check:
    """`check`, also asked for the message when the value has the wrong type: it must then
    accept any value (for settings whose message already says what type they take)."""
    check.describes_type = True  # type: ignore[attr-defined]
    return check


class Params:
    """Base of a checked parameter dataclass (see the module docstring).

    SECTION: the config section ("" = the top level); keys are named `<SECTION>.<field>`.
    CHECKS: field name -> Check, one per field.
    """

    SECTION: ClassVar[str] = ""
    CHECKS: ClassVar[Mapping[str, Check]] = {}

    def __post_init__(self) -> None:
        stale = set(type(self).CHECKS) - set(_hints(type(self)))
        if stale:
            raise TypeError(f"{type(self).__name__}.CHECKS names no field: {', '.join(sorted(stale))}")
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            object.__setattr__(self, f.name, self.check_setting(f.name, getattr(self, f.name)))
        self.validate()

    def validate(self) -> None:
        """Checks relations between fields (after each field's own check); raises ConfigError
        via `fail`. Subclasses with relations override it."""

    @classmethod
    def key(cls, name: str) -> str:
        """The config key of field `name`, e.g. "trainer.optimizer"."""
        return f"{cls.SECTION}.{name}" if cls.SECTION else name

    @classmethod
    def fail(cls, name: str, why: str) -> NoReturn:
        """Raises ConfigError "config key <section>.<name>: <why>"."""
        raise ConfigError(f"config key {cls.key(name)}: {why}")

    @classmethod
    def check_setting(cls, name: str, value: Any) -> Any:
        """Returns `value` for field `name`, type-checked (an int becomes a float where a float
        goes, a list a tuple) and passed through the field's check; ConfigError naming the key
        otherwise. TypeError when the class declares no check for the field."""
        if name not in cls.CHECKS:
            raise TypeError(f"{cls.__name__}.{name}: no check declared in {cls.__name__}.CHECKS")
        check = cls.CHECKS[name]
        try:
            value = check_type(cls.key(name), value, _hints(cls)[name])
        except ConfigError:
            if getattr(check, "describes_type", False):
                cls.fail(name, check(value) or f"unusable value {value!r}")
            raise
        if value is not None and not isinstance(value, Params):
            problem = check(value)
            if problem:
                cls.fail(name, problem)
        return value

    @classmethod
    def from_dict(cls: type[P], data: Mapping[str, Any]) -> P:
        """An instance from `dataclasses.asdict`-style `data` (nested sections as dicts), every
        field checked; ConfigError for an unknown key (fields left out keep their defaults)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        values = {}
        for name, value in data.items():
            if name not in fields:
                raise ConfigError(
                    f"unknown config key {cls.key(name)!r} (known: {', '.join(sorted(fields))})"
                )
            nested = _hints(cls)[name]
            if isinstance(nested, type) and issubclass(nested, Params) and isinstance(value, Mapping):
                value = nested.from_dict(value)
            values[name] = value
        return cls(**values)

    def to_dict(self) -> dict:
        """The fields as JSON-ready values (tuples become lists); `from_dict` reads it back."""
        return _json_ready(dataclasses.asdict(self))  # type: ignore[call-overload]


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of `cls` (cached)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def check_type(where: str, value: Any, annotation: Any) -> Any:
    """Returns `value` coerced to `annotation`, or raises ConfigError naming `where`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        non_none = [a for a in options if a is not type(None)]
        return check_type(where, value, non_none[0])
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif annotation is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(value)
    elif annotation is dict:
        if isinstance(value, Mapping):
            return plain_table(where, value)
    elif isinstance(annotation, type) and issubclass(annotation, Params):
        if isinstance(value, annotation):
            return value
    else:
        raise ConfigError(f"config key {where}: unsupported type {annotation!r}")
    type_name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"config key {where}: expected {type_name}, got {value!r}")


def plain_table(where: str, table: Mapping[str, Any]) -> dict:
    """A copy of `table` holding only JSON values (it becomes part of the cache key and of the
    run's config.json); ConfigError naming the first key that holds anything else."""

    def plain(path: str, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): plain(f"{path}.{k}", v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(f"{path}[{i}]", v) for i, v in enumerate(value)]
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        raise ConfigError(
            f"config key {path}: expected a string, number, boolean, list or table, got {value!r}"
        )

    return plain(where, table)
