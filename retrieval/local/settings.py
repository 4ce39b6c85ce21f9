"""Declared, validated settings for the local-feature parts.

Every tunable of the extractor and the verifier is a dataclass field with a :class:`Param`
(type, range) beside it, so a setting from a config file or ``--param x=y`` is one clear
:class:`RetrievalError` before anything runs, and the registry, the CLI and the dataclass
share one default: the field's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from ..registry import Param

__all__ = ["Settings", "check_fields"]


class Settings(Protocol):
    """A dataclass whose tunable fields are declared in ``PARAMS``."""

    PARAMS: ClassVar[Mapping[str, Param]]
    __dataclass_fields__: ClassVar[dict[str, Any]]


def check_fields(obj: Settings) -> None:
    """Coerce and range-check every declared field of a frozen dataclass in place (so
    ``"1000"`` from a command line becomes 1000), or raise the registry's one-line error."""
    owner = type(obj).__name__
    for name, param in obj.PARAMS.items():
        object.__setattr__(obj, name, param.coerce(owner, name, getattr(obj, name)))
