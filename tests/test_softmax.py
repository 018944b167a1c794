import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import ragcomp_lab as rl

finite = st.floats(-20, 20, allow_nan=False, allow_infinity=False, width=32)
vectors = st.lists(finite, min_size=2, max_size=12).map(lambda v: torch.tensor(v, dtype=torch.float64))
temps = st.floats(0.05, 50)


@given(vectors, temps)
def test_matches_torch_softmax_of_scaled_logits(z, T):
    torch.testing.assert_close(rl.softmax_t(z, T), torch.softmax(z / T, dim=-1))


def test_batched_over_last_dim():
    z = torch.randn(2, 3, 7)
    torch.testing.assert_close(rl.softmax_t(z, 0.7), torch.softmax(z / 0.7, dim=-1))
    torch.testing.assert_close(rl.log_softmax_t(z, 0.7), torch.log_softmax(z / 0.7, dim=-1))


@given(vectors)
def test_becomes_one_hot_as_T_goes_to_zero(z):
    top2 = z.topk(2).values
    gap = (top2[0] - top2[1]).item()
    assume(gap > 1e-3)
    p = rl.softmax_t(z, gap / 100)  # exp(-100) for the runner-up
    assert p[z.argmax()] > 1 - 1e-6
    torch.testing.assert_close(p, torch.nn.functional.one_hot(z.argmax(), len(z)).double(), atol=1e-6, rtol=0)


@given(vectors)
def test_becomes_uniform_as_T_goes_to_infinity(z):
    spread = (z.max() - z.min()).item()
    p = rl.softmax_t(z, 1e6 * (spread + 1))
    torch.testing.assert_close(p, torch.full_like(p, 1 / len(z)), atol=1e-6, rtol=0)


@settings(max_examples=200)
@given(vectors, temps, temps)
def test_entropy_rises_with_T(z, T1, T2):
    lo, hi = sorted((T1, T2))
    h_lo, h_hi = rl.entropy(rl.softmax_t(z, lo)), rl.entropy(rl.softmax_t(z, hi))
    assert h_lo <= h_hi + 1e-9
    assert h_hi <= math.log(len(z)) + 1e-9


def test_entropy_of_uniform_and_one_hot():
    assert rl.entropy(torch.full((8,), 1 / 8)).item() == pytest.approx(math.log(8))
    assert rl.entropy(torch.tensor([0.0, 1.0, 0.0])).item() == 0.0  # 0 log 0 = 0, not nan


@pytest.mark.parametrize("T", [0, -1.0, float("nan"), float("inf"), "2", True, None])
def test_bad_temperature_is_named(T):
    with pytest.raises(ValueError, match=r"T=.*temperature must be a finite number > 0"):
        rl.softmax_t(torch.randn(4), T)


def test_non_tensor_and_integer_logits_are_refused():
    with pytest.raises(ValueError, match="logits must be a torch.Tensor"):
        rl.softmax_t([1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match="floating-point"):
        rl.softmax_t(torch.tensor([1, 2]), 1.0)
