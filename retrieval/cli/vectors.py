"""``retrieve export-vectors``: the stored vectors with their ids, paths and metadata, for
other programs (pandas, a notebook, a model of one's own).

Streamed block by block from one snapshot of the catalog (:meth:`Engine.iter_vectors`):
memory holds one block whatever the size of the index. Written under a temporary name and
renamed when complete, so PATH is either a whole export or absent.

npy: a folder of ``vectors.npy`` (float32, N x dim, unit rows), ``ids.npy`` (int64, N) and
``images.jsonl`` (one JSON object per image, in the same order). parquet: one file, a row
per image with its vector as a fixed-size list (needs pyarrow: the ``parquet`` extra).
"""

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import BadQueryError, RetrievalError
from .common import DEFAULT_INDEX_DIR, IndexDir, JsonOut, Quiet, json_or_line, progress_bar

if TYPE_CHECKING:
    import numpy as np

    from ..browse import ImageInfo
    from ..engine import Engine
    from ..options import Progress

FORMATS = ("npy", "parquet")
# Images per block. Each image's row, facts and record cost more than its vector: exporting
# 120k 512-d vectors peaked at 131 MB (npy) and 299 MB (parquet, pyarrow alone ~128 MB) with
# 4096, 188 MB and 377 MB with 10,000, the same at 40k (2-core CPU; not faster either).
BLOCK = 4096
VECTORS_FILE, IDS_FILE, IMAGES_FILE = "vectors.npy", "ids.npy", "images.jsonl"

Blocks = Iterator[tuple["np.ndarray", "np.ndarray", "list[dict[str, Any]]"]]


def export_vectors(
    out: Annotated[Path, typer.Option(
        "--out", "-o", metavar="PATH", help="Where to write: a folder (npy) or a file (parquet); must not exist.")],
    file_format: Annotated[str, typer.Option(
        "--format", metavar="FORMAT", help="npy (vectors.npy, ids.npy, images.jsonl in a folder) or parquet "
                                           "(one file; needs the parquet extra).")] = "npy",
    index_dir: IndexDir = DEFAULT_INDEX_DIR,
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Write every indexed image's id, path, metadata and stored vector.

    Vectors are the catalog's unit vectors (before any whitening of the ANN index), rows
    in id order; the metadata is what `retrieve info`'s catalog knows of each file (size,
    pixels, format, modification time) and the user metadata of `retrieve meta`.
    """
    from ..engine import Engine

    if file_format not in FORMATS:
        raise BadQueryError(f"unknown vector format {file_format!r}; choose {', '.join(FORMATS)}")
    if os.path.lexists(out):
        raise BadQueryError(f"{out} exists: choose a new --out (an export never overwrites)")
    write = _write_npy if file_format == "npy" else _parquet_writer()
    partial = out.with_name(out.name + ".partial")
    with Engine.open(index_dir) as engine, progress_bar(not quiet) as progress:
        _remove(partial)  # what an interrupted export left
        try:
            with engine.catalog.snapshot():  # the count and every block from one state of the catalog
                count = len(engine)
                write(partial, engine.manifest.dim, count, _blocks(engine, count, progress))
            os.replace(partial, out)
        except BaseException:
            _remove(partial)
            raise
    json_or_line({"out": str(out), "format": file_format, "count": count, "dim": engine.manifest.dim}, json_out,
                 f"exported {count} vectors ({engine.manifest.dim}-d) to {out}")


def _blocks(engine: "Engine", total: int, progress: "Progress | None") -> Blocks:
    """(ids, vectors, records) per block; the records read in the iteration's snapshot."""
    done = 0
    for ids, vectors in engine.iter_vectors(BLOCK):
        infos = engine.image_infos(ids.tolist())
        yield ids, vectors, [_record(infos[int(i)]) for i in ids]
        done += len(ids)
        if progress:
            progress("exporting", done, total)


def _record(info: "ImageInfo") -> dict[str, Any]:
    """One image's facts, the same fields in both formats."""
    return {"id": info.id, "path": info.path, "size": info.size, "width": info.width, "height": info.height,
            "format": info.format, "modified": info.modified, "metadata": info.metadata}


def _write_npy(folder: Path, dim: int, count: int, blocks: Blocks) -> None:
    """The npy folder. Each array's header says its final shape, then its blocks are
    appended as raw bytes: plain writes, so memory holds one block (a memory map of the
    output would also be counted against the process, page by written page)."""
    from numpy.lib.format import write_array_header_1_0

    folder.mkdir(parents=True)
    done = 0
    with open(folder / VECTORS_FILE, "wb") as vectors, open(folder / IDS_FILE, "wb") as ids, \
            open(folder / IMAGES_FILE, "w", encoding="utf-8") as lines:
        write_array_header_1_0(vectors, {"descr": "<f4", "fortran_order": False, "shape": (count, dim)})
        write_array_header_1_0(ids, {"descr": "<i8", "fortran_order": False, "shape": (count,)})
        for block_ids, block_vectors, records in blocks:
            done += len(block_ids)
            _check_count(done, count)
            vectors.write(block_vectors.astype("<f4", copy=False).tobytes())
            ids.write(block_ids.astype("<i8", copy=False).tobytes())
            lines.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    _check_count(done, count, exact=True)


def _parquet_writer() -> "Callable[[Path, int, int, Blocks], None]":
    """The parquet writer, once pyarrow is known to be there (checked before any work)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise RetrievalError("--format parquet needs pyarrow: pip install 'retrieve[parquet]' "
                             "(or use --format npy)") from None

    def write(path: Path, dim: int, count: int, blocks: Blocks) -> None:
        schema = pa.schema([("id", pa.int64()), ("path", pa.string()), ("size", pa.int64()),
                            ("width", pa.int32()), ("height", pa.int32()), ("format", pa.string()),
                            ("modified", pa.string()), ("metadata", pa.string()),  # JSON: its keys vary by image
                            ("vector", pa.list_(pa.float32(), dim))])
        done = 0
        with pq.ParquetWriter(path, schema) as writer:
            for _, block_vectors, records in blocks:
                columns: dict[str, Any] = {k: [r[k] for r in records] for k in schema.names[:-2]}
                columns["metadata"] = [json.dumps(r["metadata"], ensure_ascii=False) for r in records]
                flat = pa.array(block_vectors.reshape(-1), pa.float32())
                columns["vector"] = pa.FixedSizeListArray.from_arrays(flat, dim)
                writer.write_table(pa.table(columns, schema=schema))  # one row group per block
                done += len(records)
        _check_count(done, count, exact=True)

    return write


def _check_count(done: int, count: int, exact: bool = False) -> None:
    """The snapshot's vectors and its image count must agree: anything else is a broken catalog."""
    if done > count or (exact and done != count):
        raise RetrievalError(f"the catalog holds {count} indexed images but vectors for another number "
                             "(run retrieve reindex)")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
