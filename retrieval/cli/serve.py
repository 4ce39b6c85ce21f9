"""``retrieve serve``: the HTTP API over one index (the ``serve`` extra)."""

from typing import Annotated, Optional

import typer

from ..options import EngineOptions
from .common import DEFAULT_INDEX_DIR, RUN_DEFAULTS, Device, IndexDir, Precision, Runtime, note


def serve(
    index_dir: IndexDir = DEFAULT_INDEX_DIR,
    host: Annotated[str, typer.Option(
        metavar="ADDRESS", help="Address to listen on; anything but loopback lets other machines in.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, metavar="PORT")] = 8000,
    allow_writes: Annotated[bool, typer.Option(
        "--allow-writes", help="Offer index jobs, remove, tags and metadata, each behind the bearer token.")] = False,
    token: Annotated[Optional[str], typer.Option(
        envvar="RETRIEVE_SERVE_TOKEN", show_envvar=True, metavar="TOKEN",
        help="Bearer token of writes (16 characters at least; the environment keeps it out of `ps`).")] = None,
    index_root: Annotated[Optional[list[str]], typer.Option(
        metavar="DIR", help="A folder below which index jobs may read (repeatable; none: no index jobs).")] = None,
    cors: Annotated[Optional[list[str]], typer.Option(
        metavar="ORIGIN", help="Let pages from this origin call the API, e.g. https://app.example (repeatable).")]
    = None,
    max_upload_mb: Annotated[float, typer.Option(min=0.001, max=512, metavar="MB", help="Largest upload.")] = 20,
    max_upload_mpx: Annotated[float, typer.Option(
        min=0.000001, max=100, metavar="MPX", help="Most pixels an uploaded image may declare.")] = 50,
    batch_window_ms: Annotated[float, typer.Option(
        min=0, max=1000, metavar="MS", help="How long a search waits for others to share its forward pass.")] = 5,
    max_batch: Annotated[int, typer.Option(
        min=1, max=1024, metavar="N", help="Most searches in one forward pass (1: one at a time).")] = 32,
    device: Device = RUN_DEFAULTS.device,
    precision: Precision = RUN_DEFAULTS.precision,
    runtime: Runtime = RUN_DEFAULTS.runtime,
) -> None:
    """Serve the index over HTTP: search, similar, recommend, images, thumbnails, metrics.

    The API and its documentation are at http://HOST:PORT/docs. Read-only unless
    --allow-writes; the model loads once, before the first request.
    """
    try:
        import uvicorn

        from ..serve import ServeSettings, create_app
    except ImportError as e:
        raise typer.BadParameter(f"the server needs the serve extra: pip install 'retrieve[serve]' ({e.name} "
                                 "is missing)", param_hint="serve") from None
    from ..engine import Engine

    settings = ServeSettings(allow_writes=allow_writes, token=token, index_roots=tuple(index_root or ()),
                             cors_origins=tuple(cors or ()), max_upload_bytes=int(max_upload_mb * 2**20),
                             max_upload_pixels=int(max_upload_mpx * 1e6), batch_window_ms=batch_window_ms,
                             max_batch=max_batch)
    with Engine.open(index_dir, options=EngineOptions(device=device, precision=precision, runtime=runtime)) as engine:
        note(f"serving {len(engine)} images on http://{host}:{port} (API docs at /docs)")
        uvicorn.run(create_app(engine, settings), host=host, port=port, log_level="warning")
