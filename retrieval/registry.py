"""One registry type for every pluggable part: backbones, poolings, extractors, ANN
backends, corruptions.

A :class:`Registry` maps names to factories. Each entry may declare its parameters
(:class:`Param`: type, range, default); :meth:`Registry.check` validates a parameter
mapping against them before anything is built or saved, and every unknown name (of an
entry or of a parameter) gets the same message, listing what exists. A factory may be
given as ``"package.module:attribute"``, imported when first built: names and parameters
are then known (and checked) without importing torch or FAISS.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import RetrievalError, UnknownNameError

__all__ = ["Param", "Entry", "Registry", "declared", "unknown_name"]

T = TypeVar("T")


def unknown_name(kind: str, name: object, choices: Iterator[str] | list[str] | tuple[str, ...]) -> UnknownNameError:
    """The one error for a name that is not among `choices`: says which exist."""
    listed = ", ".join(choices) or "none"
    return UnknownNameError(f"unknown {kind} {name!r}; choose {listed}")


@dataclass(frozen=True)
class Param:
    """One declared parameter of a registry entry.

    `kind` is int, float, bool or str; `low`/`high` bound numbers (inclusive); `choices`
    bounds strings; `optional` lets None through (a default decided at build time).
    """

    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False
    default: Any = None  # filled in by Registry.resolve when the caller leaves it out
    help: str = ""

    def coerce(self, owner: str, name: str, value: Any) -> Any:
        """`value` converted to this parameter's type, or a RetrievalError saying why not.

        Strings are parsed (so ``--param M=16`` works), bools accept true/false/1/0.
        """
        if value is None:
            if self.optional:
                return None
            raise RetrievalError(f"{owner} parameter {name} needs a value")
        try:
            v = self._convert(value)
        except (TypeError, ValueError):
            raise RetrievalError(f"{owner} parameter {name}={value!r}: expected {self._describe()}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise RetrievalError(f"{owner} parameter {name}={value!r}: expected a finite number")
        if self.low is not None and v < self.low or self.high is not None and v > self.high:
            raise RetrievalError(f"{owner} parameter {name}={value!r}: expected {self._describe()}")
        if self.choices and v not in self.choices:
            raise RetrievalError(f"{owner} parameter {name}={value!r}: choose {', '.join(self.choices)}")
        return v

    def _convert(self, value: Any) -> Any:
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if self.kind is int:
            if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value) if not isinstance(value, str) else int(value.strip())
        if self.kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if not isinstance(value, str):
            raise TypeError(value)
        return value

    def _describe(self) -> str:
        kind = {int: "an integer", float: "a number", bool: "true or false", str: "text"}[self.kind]
        if self.low is not None and self.high is not None:
            return f"{kind} from {self.low:g} to {self.high:g}"
        if self.low is not None:
            return f"{kind} of at least {self.low:g}"
        if self.high is not None:
            return f"{kind} of at most {self.high:g}"
        return kind


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered factory with its declared parameters and a one-line description.

    `target` is the factory, or where it lives (``"package.module:attribute"``): then
    its module is imported on first use of :attr:`factory`, not when the entry is declared.
    """

    name: str
    target: Callable[..., T] | str
    params: Mapping[str, Param] = field(default_factory=dict)
    help: str = ""

    @property
    def factory(self) -> Callable[..., T]:
        """The factory, its module imported now if it was named by a string."""
        if not isinstance(self.target, str):
            return self.target
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


class Registry(Generic[T]):
    """Named factories of one kind of part.

    Example:
        >>> poolings: Registry[nn.Module] = Registry("pooling")
        >>> @poolings.register("gem", params={"p": Param(float, low=1.0, high=20.0)})
        ... def _gem(p: float = 3.0) -> nn.Module: ...
        >>> poolings.create("gem", {"p": 4})
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, params: Mapping[str, Param] | None = None,
                 help: str = "") -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register `factory` under `name` (a name registers once)."""
        def add(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(name, factory, params=params, help=help)
            return factory
        return add

    def add(self, name: str, factory: Callable[..., T] | str, *, params: Mapping[str, Param] | None = None,
            help: str = "") -> None:
        """Register `factory` (or its ``"module:attribute"``, imported on first build) under
        `name`; registering a name twice is a programming error."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = Entry(name, factory, dict(params or {}), help)

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, name: str) -> Entry[T]:
        """The entry for `name`, or the one 'unknown X; choose ...' error."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise unknown_name(self.kind, name, self.names()) from None

    def check(self, name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Validated, typed parameters for `name`: unknown names and bad values raise
        :class:`RetrievalError` before anything is built.

        Entries that declare no parameters accept none.
        """
        entry = self.entry(name)
        checked: dict[str, Any] = {}
        for key, value in (params or {}).items():
            spec = entry.params.get(key)
            if spec is None:
                known = ", ".join(entry.params) or "none"
                raise RetrievalError(f"{self.kind} {name!r} has no parameter {key!r}; its parameters: {known}")
            checked[key] = spec.coerce(f"{self.kind} {name!r}", key, value)
        return checked

    def resolve(self, name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """:meth:`check`, plus every declared default the caller left out: the complete
        parameters, so two spellings of the same settings compare equal."""
        checked = self.check(name, params)
        entry = self.entry(name)
        defaults = {k: p.default for k, p in entry.params.items() if k not in checked and p.default is not None}
        return {**defaults, **checked}

    def create(self, name: str, params: Mapping[str, Any] | None = None, *args: Any) -> T:
        """Build `name` with validated `params` (positional `args` go first, unchecked:
        things every entry takes, such as a vector dimension)."""
        return self.entry(name).factory(*args, **self.check(name, params))


def declared(factory: Callable[..., Any], params: Mapping[str, Param]) -> dict[str, Param]:
    """`params` with each default taken from `factory`'s signature (a class's constructor,
    a dataclass's fields): one source for each default, and a declared name the factory
    does not take fails here, where it is registered."""
    signature = inspect.signature(factory).parameters
    return {name: dataclasses.replace(p, default=signature[name].default) for name, p in params.items()}
