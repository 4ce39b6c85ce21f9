"""The ``retrieve`` command line: a thin shell over :class:`retrieval.Engine`."""

from .app import main

__all__ = ["main"]
