"""The views' style sheets and scripts, kept as files so that an editor and a linter see CSS and JS.

They ship inside the package (pyproject's package-data) and are inlined into every view,
so a saved page needs nothing from the network or from this folder.
"""

from importlib import resources


def read(name: str) -> str:
    """The text of one asset, e.g. read("attention.css")."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
