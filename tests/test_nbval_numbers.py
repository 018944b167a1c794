"""The nbval plugin's comparison up to rounding: last-bit noise passes, a real change does not."""
import base64
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import nbval_numbers as nn  # noqa: E402


def same(s):
    return s


def typed(values, dtype="f8"):
    return {"dtype": dtype, "bdata": base64.b64encode(np.asarray(values, dtype=dtype).tobytes()).decode()}


def test_printed_decimals_may_differ_by_one_unit_of_their_last_digit():
    assert nn.close_text("top-1 0.9268, KL 0.1234", "top-1 0.9268, KL 0.1235")
    assert nn.close_text("loss 1.5e-03", "loss 1.6e-03")
    assert not nn.close_text("top-1 0.9268", "top-1 0.8537")  # a real change
    assert not nn.close_text("KL 0.1234", "KL 0.1236")  # two units


def test_integers_words_and_layout_compare_exactly():
    assert not nn.close_text("483 answer tokens", "484 answer tokens")
    assert not nn.close_text("0.50 met", "0.50 MISSED")
    assert not nn.close_text("a  0.1234", "a 0.1234")


def test_json_numbers_and_typed_arrays_within_a_relative_tolerance():
    fig = {"data": [{"y": [0.30000000000000004, 1e-20], "x": ["a", "b"], "z": typed([0.1, 0.2])}]}
    noisy = {"data": [{"y": [0.29999999999999993, 1.00001e-20], "x": ["a", "b"], "z": typed([0.1000001, 0.2])}]}
    assert nn.close(fig, noisy, same)
    assert not nn.close(fig, {"data": [{"y": [0.31, 1e-20], "x": ["a", "b"], "z": typed([0.1, 0.2])}]}, same)
    assert not nn.close(fig, {"data": [{"y": [0.3, 1e-20], "x": ["a", "c"], "z": typed([0.1, 0.2])}]}, same)
    assert not nn.close(typed([0.1, 0.2]), typed([0.1, 0.25]), same)
    assert not nn.close(typed([1, 2], "i4"), typed([1, 3], "i4"), same)
    assert not nn.close([10000], [10001], same) and nn.close([3], [3.0000001], same)  # JSON ints exactly
    assert not nn.close(typed([0.1, 0.2]), typed([0.1]), same)
    assert not nn.close({"a": 1}, {"a": 1, "b": 2}, same) and not nn.close(True, 1, same)


def test_the_sanitize_masks_apply_before_the_numbers_compare():
    mask = lambda s: s.replace("12.5 ms", "<duration>").replace("9.1 ms", "<duration>")  # noqa: E731
    assert nn.close("decoded in 12.5 ms, KL 0.1234", "decoded in 9.1 ms, KL 0.1235", mask)


def test_outputs_equal_up_to_rounding_are_replaced_by_the_stored_ones_others_kept():
    stored = [{"output_type": "stream", "text": "KL 0.1234\n"}, {"output_type": "stream", "text": "F1 0.50\n"}]
    fresh = [{"output_type": "stream", "text": "KL 0.1235\n"}, {"output_type": "stream", "text": "F1 0.40\n"}]
    out = nn.outputs_up_to_rounding(stored, fresh, same)
    assert out[0] is stored[0] and out[1] is fresh[1]  # the real change is left for nbval to report
    assert nn.outputs_up_to_rounding(stored, fresh[:1], same) == fresh[:1]  # another number of outputs
    with_meta = [{"output_type": "execute_result", "execution_count": 7, "metadata": {"x": 1},
                  "data": {"text/plain": "0.1235"}}]
    plain = [{"output_type": "execute_result", "execution_count": 3, "metadata": {},
              "data": {"text/plain": "0.1234"}}]
    skip = ("metadata", "execution_count")
    assert nn.outputs_up_to_rounding(plain, with_meta, same, skip)[0] is plain[0]


def test_rounded_chart_values_may_differ_by_one_unit_and_near_zero_values_are_zero():
    assert nn.close([-0.00857, 0.00031], [-0.00858, 0.0003], same)
    assert not nn.close([-0.00857], [-0.00867], same)
    assert nn.close(5.6e-09, 7.0e-09, same) and not nn.close(5.6e-07, 7.0e-07, same)
    assert not nn.close(float("nan"), 1.0, same) and not nn.close(float("inf"), 1.0, same)


def test_a_cpu_dependent_cell_masks_its_numbers_but_not_its_words_or_structure():
    assert nn.close_text("minmax top-1 1.000, up to 48", "minmax top-1 0.943, up to 50", masked=True)
    assert not nn.close_text("minmax top-1 1.000", "minmax top-1 0.943")  # unmasked, a real change
    assert not nn.close_text("observer: minmax 0.05", "observer: mse 0.05", masked=True)  # a word changed
    assert not nn.close_text("<td>0.05</td>", "<td>0.05</td><td>0.1</td>", masked=True)  # a column more
    fig = {"data": [{"y": [0.05, 0.1], "x": ["static", "dynamic"], "z": typed([0.1, 0.2]), "n": 3}]}
    moved = {"data": [{"y": [0.09, 0.2], "x": ["static", "dynamic"], "z": typed([0.3, 0.4]), "n": 4}]}
    assert nn.close(fig, moved, same, masked=True) and not nn.close(fig, moved, same)
    assert not nn.close(fig, {"data": [{"y": [0.05, 0.1], "x": ["static", "QAT"], "z": typed([0.1, 0.2]), "n": 3}]},
                        same, masked=True)
    assert not nn.close(typed([0.1, 0.2]), typed([0.1, 0.2, 0.3]), same, masked=True)  # another shape


def test_only_outputs_of_a_masked_cell_keep_their_stored_twin_when_numbers_move():
    stored = [{"output_type": "stream", "name": "stdout", "text": "top-1 1.000\n"}]
    fresh = [{"output_type": "stream", "name": "stdout", "text": "top-1 0.943\n"}]
    assert nn.outputs_up_to_rounding(stored, fresh, same) == fresh
    assert nn.outputs_up_to_rounding(stored, fresh, same, masked=True) == stored


def _run_nbval(tmp_path, tags):
    import subprocess

    import nbformat
    cell = nbformat.v4.new_code_cell("import random\nprint('top-1', round(random.random() + 2, 4))",
                                     metadata={"tags": tags})
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="top-1 2.5\n")]
    cell.execution_count = 1
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "n.ipynb")
    root = Path(__file__).parents[1]
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.nbval_numbers",
                           "--nbval", "--nbval-current-env", str(tmp_path / "n.ipynb")],
                          cwd=root, capture_output=True, text=True, timeout=300)


def test_nbval_masks_the_numbers_of_a_tagged_cell_and_only_of_it(tmp_path):
    assert _run_nbval(tmp_path, [nn.CPU_DEPENDENT]).returncode == 0
    assert _run_nbval(tmp_path, []).returncode == 1  # the same cell, untagged: its number moved
