"""A built view: an HTML fragment that shows itself in Jupyter and saves itself as a standalone page.

The feature dashboards and the attribution-graph pages are both this; a view that needs a wrapper
around its body (its style sheet, a heading) overrides ``html``.
"""

from __future__ import annotations

import html
from pathlib import Path


class Page:
    def __init__(self, body: str, title: str):
        self.title, self._body = title, body

    def html(self) -> str:
        return self._body

    def _repr_html_(self) -> str:
        return self.html()

    def save(self, path) -> Path:
        path = Path(path)
        path.write_text(f"<!doctype html><meta charset='utf-8'><title>{html.escape(self.title)}</title>{self.html()}",
                        encoding="utf-8")
        return path
