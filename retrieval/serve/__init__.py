"""`retrieve serve`: the Engine over HTTP (FastAPI on uvicorn, the ``serve`` extra).

The server holds no retrieval logic of its own: every handler calls the same
:class:`~retrieval.Engine` methods as the command line. What lives here is what only a
network service needs: request and response shapes (:mod:`.schemas`), the routes
(:mod:`.routes`), batching of concurrent searches into one forward pass (:mod:`.batching`),
background index jobs (:mod:`.jobs`), the bearer token of writes (:mod:`.auth`), limits
on what a request may send (:mod:`.limits`), Prometheus metrics (:mod:`.metrics`), and
the web page (``static/``, served by :mod:`.routes.page`). :func:`create_app`
(:mod:`.app`) puts them together.
"""

from .app import create_app
from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
