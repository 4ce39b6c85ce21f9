"""Exceptions raised by the library.

Every error a user can cause derives from :class:`RetrievalError`, and its message says
how to fix the problem. Only the CLI turns them into exit codes; the library never exits.
"""

from __future__ import annotations

__all__ = [
    "LocalFeaturesUnavailableError",
    "RetrievalError",
    "BadImageError",
    "IndexNotFoundError",
    "IndexExistsError",
    "ExtractorMismatchError",
    "WeightsUnavailableError",
    "IndexBusyError",
    "UnknownNameError",
    "BadQueryError",
    "BadMetadataError",
    "ReadOnlyIndexError",
    "DiskFullError",
    "IndexTooNewError",
]


class RetrievalError(Exception):
    """Base of every error the library raises on bad input or bad state."""


class BadImageError(RetrievalError):
    """A file could not be read or decoded as an image (corrupt, truncated, too large...)."""


class IndexNotFoundError(RetrievalError):
    """No index bundle exists at the given path."""


class IndexExistsError(RetrievalError):
    """An index bundle already exists where a new one was to be created."""


class ExtractorMismatchError(RetrievalError):
    """The extractor asked for differs from the one the index was built with."""


class WeightsUnavailableError(RetrievalError):
    """Pretrained weights could not be found offline nor downloaded."""


class IndexBusyError(RetrievalError):
    """Another process holds the write lock of the index for too long."""


class UnknownNameError(RetrievalError, ValueError):
    """A backbone, pooling or other registry name that does not exist."""


class BadQueryError(RetrievalError, ValueError):
    """A query or search argument that cannot be answered: an empty, non-finite, zero or
    wrong-size vector, a folder, a value of the wrong type, k out of range."""


class BadMetadataError(RetrievalError, ValueError):
    """Image metadata that is not plain JSON, or has a key that filters cannot name."""


class ReadOnlyIndexError(RetrievalError):
    """A write (or a needed schema upgrade) on an index opened read-only."""


class DiskFullError(RetrievalError):
    """The disk holding the index filled up; the write was rolled back."""


class IndexTooNewError(RetrievalError):
    """The index was written by a newer retrieve, with a schema this one does not know."""


class LocalFeaturesUnavailableError(RetrievalError):
    """Local features were asked for, but OpenCV (the ``local`` extra) is not installed."""
