"""Execute notebooks in place, so their stored outputs are what nbval checks against.

Usage: python tools/execute_notebooks.py book/*.ipynb labs/*.ipynb
Widget state is not stored (a FigureWidget's state is ~5 MB); execution timestamps are dropped.

A fresh output equal to the stored one up to rounding (tests/nbval_numbers.py, no masks) keeps the
stored one, so re-executing on another CPU changes only what really changed. Then each cell
that differs beyond rounding once tests/sanitize.cfg's masks apply (what nbval would fail on
against the old outputs) is listed, with its first changed lines.
"""
import os
import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbval.plugin import get_sanitize_patterns

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.nbval_numbers import _comparable, close, outputs_up_to_rounding  # noqa: E402

# Fields that carry no result. Both the keep and the report compare everything else, images and
# widget ids included, which nbval skips: a stored image never outlives the chart it showed.
SKIP = ("metadata", "execution_count")


def sanitizer(path: Path = ROOT / "tests" / "sanitize.cfg"):
    """The sanitize file's regex replacements, read and applied in order as nbval does."""
    rules = [(re.compile(regex), replace) for regex, replace in get_sanitize_patterns(path.read_text())]

    def sanitize(text: str) -> str:
        for regex, replace in rules:
            text = regex.sub(replace, text)
        return text
    return sanitize


def _text(output) -> list[str]:
    data = output.get("data", {})
    text = output.get("text") or data.get("text/plain") or ""
    return ("".join(text) if isinstance(text, list) else text).splitlines()


def changed_beyond_rounding(stored: list, fresh: list, sanitize) -> list[str]:
    """The first differing printed lines of the outputs (or what changed) if stored and fresh
    differ beyond rounding after the masks, else []."""
    if len(stored) == len(fresh) and all(close(_comparable(a, SKIP), _comparable(b, SKIP), sanitize)
                                         for a, b in zip(stored, fresh)):
        return []
    old = [line for o in stored for line in _text(o)]
    new = [line for o in fresh for line in _text(o)]
    lines = [f"  - {a}\n  + {b}" for a, b in zip(old, new) if not close(a, b, sanitize)][:3]
    return lines or [f"  {len(stored)} -> {len(fresh)} outputs, or a chart's data"]


def execute(path: Path, sanitize) -> None:
    nb = nbformat.read(path, as_version=4)
    stored = [cell.get("outputs", []) for cell in nb.cells]
    NotebookClient(nb, timeout=1800, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nb.metadata.pop("widgets", None)
    for i, (cell, old) in enumerate(zip(nb.cells, stored)):
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        cell.outputs = outputs_up_to_rounding(old, cell.outputs, lambda s: s, SKIP)
        for output in cell.outputs:  # a kept Out[n] numbered as this run numbered its cell
            if "execution_count" in output:
                output.execution_count = cell.execution_count
        changes = changed_beyond_rounding(old, cell.outputs, sanitize)
        if changes:
            print(f"{path} cell {i} changed beyond rounding:", *changes, sep="\n")
    nbformat.write(nb, path)
    print(f"executed {path}")


if __name__ == "__main__":
    os.environ["PLOTLY_RENDERER"] = "plotly_mimetype"  # the same renderer `make test` uses
    for name in sys.argv[1:]:
        execute(Path(name), sanitizer())
