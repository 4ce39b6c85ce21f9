"""``python -m retrieval.cli``: the same as the ``retrieve`` command."""

from .app import main

main()
