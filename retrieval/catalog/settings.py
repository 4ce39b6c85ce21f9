"""The catalog's settings: small named values beside the images (the manifest, the index
and local-feature settings, a learned whitening, the change log's generation). A part of
:class:`.store.Catalog` (which inherits it), kept apart so that each module holds one concept.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .models import Setting

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["Settings"]


class Settings:
    """The settings methods of :class:`.store.Catalog`."""

    if TYPE_CHECKING:  # what the Catalog provides
        def _read(self) -> contextlib.AbstractContextManager[Session]: ...

        def _write(self) -> contextlib.AbstractContextManager[Session]: ...

    def get_setting(self, key: str) -> str | None:
        """The stored value of `key`, None when absent."""
        with self._read() as s:
            row = s.get(Setting, key)
            return row.value if row else None

    def set_setting(self, key: str, value: str) -> None:
        """Store one setting (its own transaction)."""
        self.set_settings({key: value})

    def set_settings(self, values: Mapping[str, str | None]) -> None:
        """Store several settings in one transaction, None deleting one: settings that
        change together (an index's settings and the whitening they name) never disagree."""
        with self._write() as s:
            for key, value in values.items():
                if value is not None:
                    s.merge(Setting(key=key, value=value))
                elif (row := s.get(Setting, key)) is not None:
                    s.delete(row)

    def get_json(self, key: str) -> Any:
        """A setting stored as JSON, decoded; None when absent."""
        raw = self.get_setting(key)
        return json.loads(raw) if raw is not None else None
