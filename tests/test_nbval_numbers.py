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
