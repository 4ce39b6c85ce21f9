"""Labelled image sets: which images belong to which class, for evaluation and training.

A labelled set comes from a folder with one subfolder per class, or from a CSV of
``path,label`` lines (the label may be left out: the file's parent folder names it).
Bad input fails here, before any model is built, with a message that says what to fix.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import RetrievalError
from ..images.files import discover, is_image_path

__all__ = ["LabelledImages", "read_labelled", "read_image_list", "read_images"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledImages:
    """Image paths (absolute) and their class labels, in a fixed order."""

    paths: tuple[str, ...]
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def subset(self, indices: Sequence[int]) -> LabelledImages:
        return LabelledImages(tuple(self.paths[i] for i in indices), tuple(self.labels[i] for i in indices))

    def split(self, fraction: float, seed: int = 0) -> tuple[LabelledImages, LabelledImages]:
        """(train, validation): `fraction` of each class held out, at least one image of
        every class that has three or more, so validation covers the classes training sees.

        The choice depends only on `seed` and the set, so a resumed run splits the same way.
        """
        if not 0.0 <= fraction < 1.0:
            raise RetrievalError(f"validation fraction {fraction} out of range (0 to below 1)")
        import torch  # the split must match earlier releases' torch.randperm order

        gen = torch.Generator().manual_seed(seed)
        held: list[int] = []
        for label in self.classes:
            members = [i for i, lab in enumerate(self.labels) if lab == label]
            n = round(len(members) * fraction)
            if fraction > 0 and n == 0 and len(members) >= 3:
                n = 1
            order = torch.randperm(len(members), generator=gen).tolist()
            held += [members[o] for o in order[:n]]
        held_set = set(held)
        return (self.subset([i for i in range(len(self)) if i not in held_set]), self.subset(sorted(held)))

    def require_classes(self, minimum: int = 2, per_class: int = 2) -> None:
        """Raise unless `minimum` classes have `per_class` images each (triplets need both)."""
        counts = {c: self.labels.count(c) for c in self.classes}
        usable = [c for c, n in counts.items() if n >= per_class]
        if len(usable) < minimum:
            have = ", ".join(f"{c} ({n})" for c, n in sorted(counts.items())[:5]) or "none"
            raise RetrievalError(
                f"need at least {minimum} classes with {per_class}+ images each; found {len(usable)} "
                f"(classes: {have}). Put each class's images in its own subfolder, or give a CSV of path,label"
            )


def read_labelled(source: str | os.PathLike[str]) -> LabelledImages:
    """A folder of class folders (labels = subfolder names) or a CSV of ``path[,label]``.

    Raises:
        RetrievalError: the source is missing, holds no images, or a CSV names missing files.
    """
    src = Path(source)
    if src.is_file():
        return read_image_list(src)
    if not src.is_dir():
        raise RetrievalError(f"training data not found: {src} (give a folder of class folders or a CSV)")
    root = Path(os.path.abspath(src))
    paths, labels, loose = [], [], []
    for path in discover([root]):
        rel = path.relative_to(root)
        if len(rel.parts) < 2:
            loose.append(path)
            continue
        paths.append(str(path))
        labels.append(rel.parts[0])
    if not paths:  # a wrong layout: the error alone, not a line per file before it
        inside = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise RetrievalError(f"no images in class folders below {src}{inside} (expected {src}/CLASS/IMAGE.jpg)")
    if loose:
        log.warning("ignoring %d images not inside a class folder (e.g. %s)", len(loose), loose[0])
    return LabelledImages(tuple(paths), tuple(labels))


def read_images(source: str | os.PathLike[str]) -> list[str]:
    """Every image below a folder (labels are not needed), or those a list names.

    Raises:
        RetrievalError: the source is missing or holds no images.
    """
    src = Path(source)
    if src.is_file():
        return list(read_image_list(src).paths)
    if not src.is_dir():
        raise RetrievalError(f"training data not found: {src} (give a folder of images or a list of paths)")
    paths = [str(p) for p in discover([src])]
    if not paths:
        raise RetrievalError(f"no images below {src}")
    return paths


def read_image_list(path: str | os.PathLike[str]) -> LabelledImages:
    """Lines of ``path[,label]``; relative paths are taken from the list's folder.

    A first line ``path,label`` is a header and skipped; a missing label is the name of
    the image's parent folder.

    Raises:
        RetrievalError: the list is missing or empty, or names files that do not exist.
    """
    listing = Path(path)
    if not listing.is_file():
        raise RetrievalError(f"image list not found: {listing}")
    paths, labels, missing = [], [], []
    with open(listing, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            row = [cell.strip() for cell in row]
            if not row or not row[0] or row[0].startswith("#"):
                continue
            if line_no == 1 and row[0].lower() == "path":
                continue
            image = Path(os.path.expanduser(row[0]))
            image = image if image.is_absolute() else listing.parent / image
            if not image.is_file():
                missing.append((line_no, row[0]))
                continue
            if not is_image_path(image):
                raise RetrievalError(f"{listing}, line {line_no}: {row[0]} is not an image file name")
            paths.append(os.path.abspath(image))
            labels.append(row[1] if len(row) > 1 and row[1] else image.parent.name)
    if missing:
        line_no, name = missing[0]
        raise RetrievalError(f"{listing}: {len(missing)} listed file(s) do not exist, "
                             f"first {name!r} on line {line_no}")
    if not paths:
        raise RetrievalError(f"{listing} lists no images")
    return LabelledImages(tuple(paths), tuple(labels))
