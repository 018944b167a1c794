import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import ragcomp_lab as rl

temps = st.floats(0.1, 20)
seeds = st.integers(0, 2**31 - 1)


def _logits(seed, shape=(6, 10), scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype) * scale


# --- kd_kl ---------------------------------------------------------------------------------

@given(seeds, temps)
def test_kd_kl_matches_torch_kl_div_batchmean_times_T2(seed, T):
    s, t = _logits(seed), _logits(seed + 1)
    want = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T**2
    torch.testing.assert_close(rl.kd_kl(s, t, T), want)


def test_kd_kl_averages_over_every_position_of_a_sequence_batch():
    s, t = _logits(0, (2, 5, 7)), _logits(1, (2, 5, 7))
    torch.testing.assert_close(rl.kd_kl(s, t, 2.0), rl.kd_kl(s.reshape(10, 7), t.reshape(10, 7), 2.0))


@given(seeds, temps)
def test_kd_kl_is_non_negative_and_zero_for_identical_logits(seed, T):
    s, t = _logits(seed), _logits(seed + 1)
    assert rl.kd_kl(s, t, T) >= 0
    assert rl.kd_kl(t, t, T).abs() < 1e-12


def test_kd_kl_is_not_symmetric():
    s, t = _logits(3), _logits(4)
    assert not torch.isclose(rl.kd_kl(s, t, 1.0), rl.kd_kl(t, s, 1.0))


@settings(max_examples=30)
@given(seeds, temps)
def test_kd_kl_gradient_is_T_times_ps_minus_pt(seed, T):
    """d/dz_s [T^2 KL(p_t||p_s)] = T (p_s - p_t) / N: the reason for the T^2 factor."""
    s, t = _logits(seed).requires_grad_(True), _logits(seed + 1)
    (grad,) = torch.autograd.grad(rl.kd_kl(s, t, T), s)
    want = T * (torch.softmax(s / T, -1) - torch.softmax(t / T, -1)) / s.shape[0]
    torch.testing.assert_close(grad, want.detach())


def test_kd_kl_passes_gradcheck():
    s, t = _logits(5, (3, 4)).requires_grad_(True), _logits(6, (3, 4)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: rl.kd_kl(a, b, 2.5), (s, t))


def test_kd_kl_mask_averages_over_selected_positions_only():
    s, t = _logits(7, (2, 4, 9)), _logits(8, (2, 4, 9))
    mask = torch.tensor([[True, False, True, True], [False, False, True, False]])
    torch.testing.assert_close(rl.kd_kl(s, t, 3.0, mask=mask), rl.kd_kl(s[mask], t[mask], 3.0))


@pytest.mark.parametrize("mask, message", [
    (torch.zeros(6, dtype=torch.bool), "selects no position"),
    (torch.ones(5, dtype=torch.bool), r"mask shape \(5,\)"),
    ([True] * 6, "mask must be a torch.Tensor"),
])
def test_kd_kl_bad_mask(mask, message):
    with pytest.raises(ValueError, match=message):
        rl.kd_kl(_logits(0), _logits(1), 2.0, mask=mask)


def test_vocabulary_mismatch_is_a_clear_value_error():
    with pytest.raises(ValueError, match="vocabularies differ: student_logits has 10 classes, teacher_logits has 12"):
        rl.kd_kl(_logits(0, (4, 10)), _logits(1, (4, 12)), 2.0)
    with pytest.raises(ValueError, match="does not match teacher_logits shape"):
        rl.kd_kl(_logits(0, (4, 10)), _logits(1, (5, 10)), 2.0)


# --- topk_kd_kl: the KL from a top-k cache, with a "rest" bucket ---------------------------

def _topk(t, k):
    top = F.log_softmax(t, -1).topk(k, -1)
    return top.indices, top.values


@given(seeds, temps)
def test_topk_kl_with_every_token_kept_is_kd_kl(seed, T):
    s, t = _logits(seed), _logits(seed + 1)
    torch.testing.assert_close(rl.topk_kd_kl(s, *_topk(t, t.shape[-1]), T), rl.kd_kl(s, t, T))


@given(seeds, st.integers(1, 9))
def test_topk_kl_at_T1_is_the_kl_of_the_distributions_with_their_tails_merged(seed, k):
    s, t = _logits(seed), _logits(seed + 1)
    ids, lt = _topk(t, k)
    p_t, p_s = F.softmax(t, -1), F.softmax(s, -1)
    merge = lambda p: torch.cat([p.gather(-1, ids), 1 - p.gather(-1, ids).sum(-1, keepdim=True)], -1)  # noqa: E731
    q_t, q_s = merge(p_t), merge(p_s)
    want = (q_t * (q_t.log() - q_s.log())).sum(-1).mean()
    got = rl.topk_kd_kl(s, ids, lt, 1.0)
    torch.testing.assert_close(got, want)
    assert got <= rl.kd_kl(s, t, 1.0) + 1e-12  # merging outcomes never raises a KL


@given(seeds, temps, st.integers(1, 9))
def test_topk_kl_is_non_negative_and_zero_when_the_student_is_the_teacher(seed, T, k):
    s, t = _logits(seed), _logits(seed + 1)
    assert rl.topk_kd_kl(s, *_topk(t, k), T) >= 0
    flat = torch.zeros_like(t)  # a uniform teacher: its tail really is uniform, so the bucket is exact
    assert rl.topk_kd_kl(flat, *_topk(flat, k), T).abs() < 1e-10


@pytest.mark.parametrize("T", [2.0, 4.0, 8.0])
def test_topk_kl_of_a_peaked_teacher_in_float32_matches_float64(T):
    # top-256 of a peaked teacher: the tail is ~5e-8, and T > 1 raises it to a bucket that dominates
    # the KL, so 1 - sum(top-k) taken in float32 was off by a third; float32 inputs must not matter
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        t = torch.randn(1, 4096, dtype=torch.float64, generator=g) * 2
        t[0, 0] = 26.0
        top = F.log_softmax(t, -1).topk(256, -1)
        s = torch.randn(1, 4096, dtype=torch.float64, generator=g)
        want = rl.topk_kd_kl(s, top.indices, top.values, T)
        got = rl.topk_kd_kl(s.float(), top.indices, top.values.float(), T)
        torch.testing.assert_close(got.double(), want, rtol=1e-3, atol=0)


def test_topk_kl_gradient_moves_the_student_toward_the_teacher():
    s, t = _logits(0).requires_grad_(), _logits(1)
    loss = rl.topk_kd_kl(s, *_topk(t, 3), 2.0)
    loss.backward()
    with torch.no_grad():
        assert rl.topk_kd_kl(s - 0.1 * s.grad, *_topk(t, 3), 2.0) < loss


def test_distillation_loss_from_a_topk_cache_uses_the_topk_kl():
    s, t = _logits(0), _logits(1)
    labels = torch.tensor([1, 2, -100, 4, 5, 6])
    ids, lt = _topk(t, 4)
    parts = rl.distillation_loss(s, None, labels, 2.0, 0.3, teacher_topk=(ids, lt))
    keep = labels != -100
    torch.testing.assert_close(parts.soft, rl.topk_kd_kl(s, ids, lt, 2.0, mask=keep))
    torch.testing.assert_close(parts.total, 0.3 * parts.hard + 0.7 * parts.soft)
    with pytest.raises(ValueError, match="not both"):
        rl.distillation_loss(s, t, labels, teacher_topk=(ids, lt))


def test_topk_kl_bad_shapes_are_clear():
    s, t = _logits(0), _logits(1)
    ids, lt = _topk(t, 3)
    with pytest.raises(ValueError, match="top-k shapes"):
        rl.topk_kd_kl(s, ids[:, :2], lt, 2.0)
    with pytest.raises(ValueError, match="top-k shapes"):
        rl.topk_kd_kl(s[:3], ids, lt, 2.0)


# --- distillation_loss -----------------------------------------------------------------------

@given(seeds, temps, st.floats(0, 1))
def test_distillation_loss_is_the_alpha_mix_of_hard_and_soft(seed, T, alpha):
    s, t = _logits(seed, (2, 5, 10)), _logits(seed + 1, (2, 5, 10))
    labels = torch.randint(0, 10, (2, 5), generator=torch.Generator().manual_seed(seed))
    labels[0, :2] = -100
    parts = rl.distillation_loss(s, t, labels, T, alpha)
    keep = labels != -100
    torch.testing.assert_close(parts.hard, F.cross_entropy(s.reshape(-1, 10), labels.reshape(-1), ignore_index=-100))
    torch.testing.assert_close(parts.soft, rl.kd_kl(s, t, T, mask=keep))
    torch.testing.assert_close(parts.total, alpha * parts.hard + (1 - alpha) * parts.soft)
    assert parts == (parts.total, parts.hard, parts.soft)


def test_alpha_one_ignores_the_teacher_and_alpha_zero_ignores_the_labels():
    s = _logits(0).requires_grad_(True)
    t1, t2, labels = _logits(1), _logits(2), torch.arange(6) % 10
    g1 = torch.autograd.grad(rl.distillation_loss(s, t1, labels, 2.0, 1.0).total, s)[0]
    g2 = torch.autograd.grad(rl.distillation_loss(s, t2, labels, 2.0, 1.0).total, s)[0]
    torch.testing.assert_close(g1, g2)
    torch.testing.assert_close(rl.distillation_loss(s, t1, labels, 2.0, 0.0).total, rl.kd_kl(s, t1, 2.0))


def test_custom_ignore_index():
    s, t = _logits(0), _logits(1)
    labels = torch.tensor([1, 2, 0, 0, 3, 0])
    parts = rl.distillation_loss(s, t, labels, 2.0, 0.5, ignore_index=0)
    keep = labels != 0
    torch.testing.assert_close(parts.hard, F.cross_entropy(s[keep], labels[keep]))


@pytest.mark.parametrize("labels, kwargs, message", [
    (torch.tensor([0, 1, 2, 3, 4, 10]), {}, r"label 10 is out of range: labels must lie in \[0, 9\]"),
    (torch.tensor([0, 1, 2, 3, 4, -5]), {}, "label -5 is out of range"),
    (torch.full((6,), -100), {}, "selects no position"),
    (torch.tensor([0, 1, 2]), {}, r"labels shape \(3,\)"),
    (torch.zeros(6), {}, "integer class indices"),
    (torch.zeros(6, dtype=torch.long), {"alpha": 2.0}, "alpha=2.0"),
    (torch.zeros(6, dtype=torch.long), {"T": -1.0}, "T=-1.0"),
])
def test_distillation_loss_bad_input(labels, kwargs, message):
    args = dict(T=2.0, alpha=0.5) | kwargs
    with pytest.raises(ValueError, match=message):
        rl.distillation_loss(_logits(0), _logits(1), labels, **args)


# --- feature_loss and relation_loss ------------------------------------------------------------

def test_feature_loss_mse_and_cosine():
    s, t = _logits(0, (2, 5, 8)), _logits(1, (2, 5, 8))
    torch.testing.assert_close(rl.feature_loss(s, t), F.mse_loss(s, t))
    assert rl.feature_loss(3 * t, t, kind="cosine").abs() < 1e-12  # cosine ignores scale
    assert rl.feature_loss(s, s) == 0
    mask = torch.tensor([[True] * 5, [False] * 5])
    torch.testing.assert_close(rl.feature_loss(s, t, mask=mask), F.mse_loss(s[0], t[0]))


def test_feature_loss_learns_a_projection_when_widths_differ():
    s, t = _logits(0, (4, 6), dtype=torch.float32), _logits(1, (4, 16), dtype=torch.float32)
    with pytest.raises(ValueError, match=r"pass proj=feature_projection\(6, 16\)"):
        rl.feature_loss(s, t)
    proj = rl.feature_projection(6, 16)
    loss = rl.feature_loss(s, t, proj=proj)
    loss.backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="kind='l1'"):
        rl.feature_loss(s, s, kind="l1")


def test_relation_loss_ignores_width_rotation_and_scale():
    h = _logits(0, (2, 6, 8))
    q, _ = torch.linalg.qr(_logits(1, (8, 8)))
    assert rl.relation_loss(h @ q, h) < 1e-12  # rotated: same token-to-token similarities
    assert rl.relation_loss(torch.cat([5 * h, torch.zeros(2, 6, 4, dtype=h.dtype)], -1), h) < 1e-12  # wider, scaled
    other = _logits(2, (2, 6, 8))
    assert rl.relation_loss(other, h) > 1e-3
    torch.testing.assert_close(rl.relation_loss(other, h), rl.relation_loss(h, other))


def test_relation_loss_mask_leaves_out_padding():
    h, other = _logits(0, (1, 5, 8)), _logits(1, (1, 5, 8))
    mask = torch.tensor([[True, True, True, False, False]])
    noisy = other.clone()
    noisy[:, 3:] = 100.0  # padding content must not matter
    torch.testing.assert_close(rl.relation_loss(noisy, h, mask), rl.relation_loss(other, h, mask))
    torch.testing.assert_close(rl.relation_loss(other, h, mask), rl.relation_loss(other[:, :3], h[:, :3]))
    with pytest.raises(ValueError, match="must agree on every dim but the width"):
        rl.relation_loss(h, _logits(1, (1, 4, 8)))


def test_topk_kl_survives_a_cache_whose_topk_sums_past_one_by_rounding():
    s = _logits(0, dtype=torch.float32).requires_grad_()
    ids = torch.arange(3).expand(6, 3)
    lt = torch.log(torch.tensor([1.0 - 1e-7, 1e-7, 1e-7])).expand(6, 3)  # sums to 1 + 1e-7
    loss = rl.topk_kd_kl(s, ids, lt, 2.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
