"""Execute notebooks in place, so their stored outputs are what nbval checks against.

Usage: python tools/execute_notebooks.py book/*.ipynb labs/*.ipynb
Widget state is not stored (a FigureWidget's state is ~5 MB); execution timestamps are dropped.
"""
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

os.environ["PLOTLY_RENDERER"] = "plotly_mimetype"  # the same renderer `make test` uses

for name in sys.argv[1:]:
    path = Path(name)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=1800, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    print(f"executed {path}")
