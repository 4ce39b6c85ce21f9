"""The facts about a photo that its EXIF gives and the catalog keeps in the image's row.

A plain record, importable without Pillow: the catalog writes and reads it, and
:mod:`retrieval.images.exif` fills it from a file's headers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["PhotoFacts"]


@dataclass(frozen=True)
class PhotoFacts:
    """What a photo's EXIF says (None: the file does not say). Each field is a column of
    the images table, under the same name.

    Attributes:
        taken_at: when the photo was taken, by the camera's clock, as ``YYYY-MM-DDTHH:MM:SS``.
        camera_make, camera_model, lens: as the camera wrote them, trimmed.
        gps_lat, gps_lon: decimal degrees, WGS 84 (south and west negative).
        orientation: the EXIF orientation tag, 1 to 8.
    """

    taken_at: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    lens: str | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None
    orientation: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of_row(cls, row: Any) -> PhotoFacts:
        """The facts stored on a catalog row (any object with these attributes)."""
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})

    def write_to(self, row: Any) -> None:
        """Set these facts as the row's columns (all of them: None clears one)."""
        for f in fields(self):
            setattr(row, f.name, getattr(self, f.name))
