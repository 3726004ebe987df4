"""Build the course website offline: `make site`, or `python site/build.py --out DIR`.

1. Stage a Sphinx source folder (a temporary one): conf.py, index.md and _static/ from site/; the course map,
   generated from the notebooks and README.md; the executed notebooks with their plotly and widget outputs made
   static (site/convert.py; nothing is executed); the attention views and explorers, built from phi4lab.viz on
   phi4-tiny (site/views.py); plotly.js from the installed plotly package and MathJax from site/node_modules.
2. Run Sphinx (myst-nb, sphinx-book-theme) into --out. Its search index is a static file: search works offline.

Prints the time of each step and the site's size on disk.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import convert  # noqa: E402  (site/convert.py)
import views  # noqa: E402  (site/views.py)

MATHJAX = HERE / "node_modules" / "mathjax" / "es5"
# What the pages load (tex-chtml.js), its fonts, and what it loads on demand (TeX extensions, the menu's parts).
MATHJAX_PARTS = ["tex-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions", "ui", "a11y"]
NOTEBOOK_NAME = re.compile(r"`(\d\d_[a-z0-9_]+)\.ipynb`")


class SiteError(RuntimeError):
    """Something the build needs is missing; the message says how to get it."""


def check_toolchain() -> None:
    missing = [m for m in ("sphinx", "myst_nb", "sphinx_book_theme") if _find_spec(m) is None]
    if missing:
        raise SiteError(f"{', '.join(missing)} not installed: .venv/bin/pip install -c constraints.txt -e '.[test]'")
    if not (MATHJAX / "tex-chtml.js").exists():
        raise SiteError("MathJax is not in site/node_modules: (cd site && npm ci)")


def _find_spec(name: str):
    import importlib.util
    return importlib.util.find_spec(name)


def _linked(markdown: str) -> str:
    """`00_welcome.ipynb` in a table cell -> a link to that notebook's page."""
    return NOTEBOOK_NAME.sub(lambda m: f"[`{m.group(1)}`](notebooks/{m.group(1)}.ipynb)", markdown)


def course_map(course: Path, readme: Path) -> str:
    """The course-map page: README's table of objectives, and the exercise counts, generated from the notebooks
    by phi4lab.exercises.coursemap (the code that writes README.md's table between the course-map markers)."""
    from phi4lab.exercises import coursemap

    text = readme.read_text(encoding="utf-8")
    counts = coursemap.table(coursemap.read_course(course))
    start, end = text.find(coursemap.BEGIN), text.find(coursemap.END)
    if start < 0 or end < start:
        raise SiteError(f"{readme} has no course-map markers")
    if text[start + len(coursemap.BEGIN):end].strip() != counts.strip():
        print("site: README.md's course map differs from the notebooks' (run `phi4lab course-map`); "
              "the site shows the notebooks' counts", file=sys.stderr)
    section = text[text.index("## Course map"):start]
    objectives = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    if not objectives:
        raise SiteError("README.md's '## Course map' section has no table")
    return "\n".join([
        "# Course map", "",
        "What each notebook covers, what to take first, and how long it runs on a laptop CPU "
        "(from README.md's course map).", "",
        _linked(objectives), "",
        "## Exercises", "",
        "Exercises and \"predict, then run\" questions per notebook, counted from the notebooks' cells when this "
        "site was built (`phi4lab.exercises.coursemap`, which also writes README.md's table).", "",
        _linked(counts), ""])


def vendor(static: Path, with_plotly: bool) -> None:
    """plotly.js from the installed plotly package, MathJax from site/node_modules: no CDN at run time."""
    import json

    import plotly
    from plotly.offline import get_plotlyjs_version

    vendored = static / "vendor"
    vendored.mkdir(parents=True, exist_ok=True)
    if with_plotly:                  # 4.8 MB: only when a figure has no static PNG
        shutil.copy2(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", vendored / "plotly.min.js")
    for part in MATHJAX_PARTS:
        src, dst = MATHJAX / part, vendored / "mathjax" / part
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    mathjax = json.loads((MATHJAX.parent / "package.json").read_text(encoding="utf-8"))["version"]
    (vendored / "versions.json").write_text(json.dumps({"plotly.js": get_plotlyjs_version(), "mathjax": mathjax}))


def stage(src: Path, course: Path, readme: Path) -> dict:
    """Write the Sphinx source folder; returns what went into it."""
    for name in ("conf.py", "index.md"):
        shutil.copy2(HERE / name, src / name)
    shutil.copytree(HERE / "_static", src / "_static")
    (src / "course-map.md").write_text(course_map(course, readme), encoding="utf-8")
    notebooks = src / "notebooks"
    notebooks.mkdir()
    totals: dict[str, int] = {}
    paths = sorted(course.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise SiteError(f"no notebooks in {course}")
    for path in paths:
        nb, counts = convert.convert(nbformat.read(path, as_version=4))
        nbformat.write(nb, notebooks / path.name)
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
    vendor(src / "_static", with_plotly=totals["plotly_js"] > 0)
    made = views.write_views(course, src / "_extra", src)
    return {"notebooks": len(paths), "views": len(made), **totals}


def _size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def build(out: Path, course: Path = ROOT / "course", readme: Path = ROOT / "README.md", jobs: int = 1) -> dict:
    """Build the site into `out` (replacing an earlier build there); returns timings and sizes."""
    check_toolchain()
    out = out.resolve()
    if out.exists():
        if any(out.iterdir()) and not (out / ".buildinfo").exists():
            raise SiteError(f"{out} exists and is not an earlier build of the site: refusing to replace it")
        shutil.rmtree(out)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="phi4lab-site-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        info = stage(src, course.resolve(), readme.resolve())
        t1 = time.perf_counter()
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
        cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-E", "-j", str(jobs),
               "-d", str(Path(tmp) / "doctrees"), str(src), str(out)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            raise SiteError(f"sphinx-build failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    t2 = time.perf_counter()
    size, n_files = _size(out)
    info.update(stage_s=t1 - t0, sphinx_s=t2 - t1, total_s=t2 - t0, bytes=size, files=n_files,
                pages=len(list(out.rglob("*.html"))), warnings=warnings)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site")
    parser.add_argument("--course", type=Path, default=ROOT / "course")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--jobs", type=int, default=1, help="Sphinx's parallel workers")
    args = parser.parse_args(argv)
    try:
        info = build(args.out, args.course, args.readme, args.jobs)
    except SiteError as e:
        print(f"site: {e}", file=sys.stderr)
        return 1
    for w in info["warnings"]:
        print(w, file=sys.stderr)
    print(f"site: {info['notebooks']} notebooks ({info['plotly_png']} plotly figures as PNG, {info['plotly_js']} "
          f"drawn by the vendored plotly.js, {info['widgets']} widgets as static HTML), {info['views']} view pages; "
          f"{info['pages']} HTML pages, {info['files']} files, {info['bytes'] / 2**20:.1f} MiB in {args.out}")
    print(f"site: built in {info['total_s']:.1f} s (staging and views {info['stage_s']:.1f} s, "
          f"Sphinx {info['sphinx_s']:.1f} s); {len(info['warnings'])} Sphinx warnings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
