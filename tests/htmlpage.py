"""A contact sheet's HTML read back the way a test looks at it (query --sheet, dupes --sheet,
retrieval.sheets): which tags it uses, the URLs it embeds and the text it shows."""

from __future__ import annotations

from html.parser import HTMLParser


class Page(HTMLParser):
    """Feed it a page; then `tags`, `sources` (src attributes), `urls` (src and href, in
    document order) and `text` (each run of text) hold what it had."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.sources: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.sources += [value or "" for name, value in attrs if name == "src"]
        self.urls += [value or "" for name, value in attrs if name in ("src", "href")]

    def handle_data(self, data: str) -> None:
        self.text.append(data)
