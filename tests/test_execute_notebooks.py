"""tools/execute_notebooks.py: re-executing keeps outputs equal up to rounding and reports real changes."""
import importlib.util
from pathlib import Path

import nbformat

spec = importlib.util.spec_from_file_location("execute_notebooks",
                                              Path(__file__).parents[1] / "tools" / "execute_notebooks.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def _cell(source, stored_text):
    cell = nbformat.v4.new_code_cell(source)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stored_text)]
    return cell


def test_rounding_keeps_the_stored_output_a_real_change_is_reported_and_a_new_timing_is_kept(tmp_path, capsys):
    nb = nbformat.v4.new_notebook()
    nb.cells = [_cell("print(0.1 + 0.2)", "0.3000000000000001\n"),  # another CPU's last bit
                _cell("print('top-1', 0.8537)", "top-1 0.9268\n"),  # a real change
                _cell("print('took 1.5 s')", "took 2.5 s\n"),  # a timing: measured again, masked
                nbformat.v4.new_markdown_cell("text")]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    tool.execute(path, tool.sanitizer())
    cells = nbformat.read(path, as_version=4).cells
    assert [c.outputs[0].text for c in cells[:3]] == ["0.3000000000000001\n", "top-1 0.8537\n", "took 1.5 s\n"]
    report = capsys.readouterr().out
    assert f"{path} cell 1 changed beyond rounding:\n  - top-1 0.9268\n  + top-1 0.8537" in report
    assert "cell 0" not in report and "cell 2" not in report


def test_sanitizer_applies_the_masks_of_sanitize_cfg():
    sanitize = tool.sanitizer()
    assert sanitize("decode 12.5 ms, 3.26x, fastest on 2 thread(s)") == sanitize("decode 9 ms, 1.1x, fastest on 1 thread(s)")
    assert sanitize("top-1 0.927") != sanitize("top-1 0.854")
