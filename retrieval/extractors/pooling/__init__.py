"""Global pooling of CNN feature maps into one vector per image.

Each pooling is a plain function plus a thin ``nn.Module`` (in :mod:`.layers`, R-MAC in
:mod:`.regional`), registered
by name in :data:`POOLINGS` with its parameters declared (``{"p": 3.0}`` for GeM), so a new
pooling with parameters of its own plugs in without new options anywhere else. The
registry names its factories by string: checking a config's pooling and parameters (every
bundle opened does) imports no torch; building a pooling does.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...registry import Param, Registry

if TYPE_CHECKING:
    from torch import nn

    from .layers import AvgPool, GeM, MaxPool, avg, gem, max_, valid_mask
    from .regional import RMAC, rmac

__all__ = ["gem", "avg", "max_", "rmac", "GeM", "AvgPool", "MaxPool", "RMAC", "POOLINGS", "create_pooling",
           "stored_pooling_params", "valid_mask"]

_LAYERS = f"{__name__}.layers"
_REGIONAL = f"{__name__}.regional"

POOLINGS: Registry[nn.Module] = Registry("pooling")
POOLINGS.add("gem", f"{_LAYERS}:GeM", params={"p": Param(float, low=1.0, high=20.0, default=3.0, help="GeM exponent")},
             help="generalised mean (p=1 average, large p max)")
POOLINGS.add("avg", f"{_LAYERS}:AvgPool", help="average of the valid cells (SPoC)")
POOLINGS.add("max", f"{_LAYERS}:MaxPool", help="maximum of the valid cells (MAC)")
POOLINGS.add("rmac", f"{_REGIONAL}:RMAC",
             params={"levels": Param(int, low=1, high=5, default=3, help="region scales (L)"),
                     "p": Param(float, low=1.0, high=20.0, optional=True,
                                help="GeM exponent within each region; left out: max (R-MAC proper)")},
             help="regional max pooling over the valid cells, regions summed (R-MAC)")


def create_pooling(name: str, params: Mapping[str, Any] | None = None) -> nn.Module:
    """Build a pooling module by registry name with its parameters (checked).

    Raises:
        UnknownNameError: no such pooling.
        RetrievalError: a parameter it does not have, or a value out of range.
    """
    return POOLINGS.create(name, params)


def stored_pooling_params(saved: Mapping[str, Any]) -> dict[str, Any]:
    """The pooling parameters of a stored config (a manifest's or a checkpoint's).

    Release 0.1 stored GeM's exponent as ``gem_p``: it reads as ``{"p": gem_p}``, so
    indexes and checkpoints of that release open and match as before.
    """
    if "pooling_params" in saved:
        return dict(saved["pooling_params"])
    if saved.get("pooling", "gem") == "gem" and "gem_p" in saved:
        return {"p": saved["gem_p"]}
    return {}


def __getattr__(name: str) -> Any:
    """The torch parts (:mod:`.layers`, :mod:`.regional`), imported on first use (PEP 562)."""
    if name in __all__:  # and not defined here
        return getattr(importlib.import_module(_REGIONAL if name in ("rmac", "RMAC") else _LAYERS), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
