import pytest
import math

import plotly.graph_objects as go
import torch

import ragcomp_lab as rl
from ragcomp_lab import check, diagram, viz, widgets

Z = torch.tensor([3.0, 1.5, 0.5, 0.0, -1.0])
TEACHER = torch.tensor([2.5, 2.0, 0.0, -0.5, -1.0])


def test_temperature_slider_steps_hold_softmax_at_each_T():
    Ts = [0.5, 1, 2, 8]
    fig = viz.temperature_slider(Z, Ts)
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["0.5", "1", "2", "8"]
    for step, T in zip(steps, Ts):
        torch.testing.assert_close(torch.tensor(step.args[0]["y"][0]), rl.softmax_t(Z, T))
        assert f"T = {T:g}" in step.args[1]["title.text"]


def test_entropy_curve_rises_to_log_V():
    fig = viz.entropy_curve(Z, [0.1, 1, 10, 100])
    h = fig.data[0].y
    assert list(h) == sorted(h) and h[-1] < math.log(5) and h[-1] > 0.99 * math.log(5)


def test_loss_slider_frames_follow_the_formula():
    fig = viz.loss_slider(Z, TEACHER, 0, [1, 4], alpha=0.25)
    for step, T in zip(fig.layout.sliders[0].steps, [1, 4]):
        hard, soft, total = step.args[0]["y"][:3]
        parts = rl.distillation_loss(Z[None], TEACHER[None], torch.tensor([0]), T, 0.25)
        assert abs(hard[0] - parts.hard.item()) < 1e-6 and abs(soft[0] - parts.soft.item()) < 1e-6
        assert abs(total[5] - (0.25 * parts.hard + 0.75 * parts.soft).item()) < 1e-6  # alphas[5] = 0.25
        # the total gradient bar is the sum of the weighted part bars
        g_hard, g_soft, g_total = step.args[0]["y"][3:]
        assert all(abs(a + b - c) < 1e-6 for a, b, c in zip(g_hard, g_soft, g_total))


def test_t_squared_keeps_the_soft_gradient_from_vanishing():
    fig = viz.t_squared_gradients(Z, TEACHER, [1, 4, 16])
    scaled, unscaled = fig.data[0].y, fig.data[1].y
    assert unscaled[-1] < unscaled[0] / 10  # without T^2 the gradient collapses
    assert scaled[-1] > unscaled[-1] * 100


def test_heatmap_and_bars():
    table = [{"T": T, "alpha": a, "accuracy": 0.5 + T / 100 + a / 10} for T in (1, 4) for a in (0.1, 0.5)]
    fig = viz.sweep_heatmap(table)
    assert fig.data[0].z[0][1] == 100 * table[2]["accuracy"]  # alpha 0.1 row, T=4 column
    bars = viz.accuracy_bars({"a": [0.8, 0.9], "b": [0.95]})
    assert [round(y, 6) for y in bars.data[0].y] == [85.0, 95.0]


def test_kd_diagram_draws_every_part():
    fig = diagram.kd_diagram()
    text = " ".join(a.text for a in fig.layout.annotations)
    for part in ("teacher", "student", "soft targets", "L<sub>KD</sub>", "L<sub>student</sub>", "α", "gradient"):
        assert part in text
    assert isinstance(fig, go.Figure) and len(fig.layout.shapes) == 11


def test_temperature_panel_redraws_when_the_slider_moves():
    panel = widgets.temperature_panel(Z, T=1.0)
    panel.T.value = 5.0
    torch.testing.assert_close(torch.tensor(panel.figure.data[0].y), rl.softmax_t(Z, panel.T.value))
    assert f"T = {panel.T.value:g}" in panel.figure.layout.title.text
    assert repr(panel) == "Panel(T slider over softmax(z/T))"


def test_loss_panel_redraws_for_T_and_alpha():
    panel = widgets.loss_panel(Z, TEACHER, 0, T=2.0, alpha=0.5)
    before = panel.figure.data[5].y
    panel.alpha.value = 0.9
    assert "alpha = 0.9" in panel.figure.layout.title.text and panel.figure.data[5].y != before
    panel.T.value = 4.0
    assert panel.figure.layout.title.text.startswith("T = 4")


def test_digits_panel_retrains_on_click():
    from ragcomp_lab import digits
    task = digits.load_task(60)
    teacher = digits.train_teacher(task, steps=100)
    panel = widgets.digits_panel(task, teacher, rl.DistillConfig(T=4.0, alpha=0.1, steps=50, lr=1e-2))
    first = panel.result.value
    panel.alpha.value = 1.0
    panel.button.click()
    assert panel.result.value != first and "alpha = 1.00" in panel.result.value
    assert "change +0.0 points" in panel.result.value  # alpha = 1 is the baseline itself


def test_checks_accept_right_and_explain_wrong_answers():
    right = check.softmax_t(lambda z, T: torch.softmax(z / T, -1))
    assert right and repr(right).startswith("✔")
    wrong = check.softmax_t(lambda z, T: torch.softmax(z, -1))
    assert not wrong and "Hint: divide the logits by T" in repr(wrong)
    todo = check.kd_kl(lambda s, t, T: None)
    assert not todo and "returned NoneType" in todo.message
    boom = check.fake_quant(lambda x, b: 1 / 0)
    assert not boom and "ZeroDivisionError" in boom.message


def test_top_tokens_are_drawn_from_the_full_softmax():
    z = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    labels = [f"tok{i}" for i in range(1000)]
    fig = viz.temperature_slider(z, [1, 4], labels=labels, top=5)
    top5 = z.topk(5).indices
    assert list(fig.data[0].x) == [labels[i] for i in top5]
    torch.testing.assert_close(torch.tensor(fig.layout.sliders[0].steps[1].args[0]["y"][0]), rl.softmax_t(z, 4)[top5])
    panel = widgets.temperature_panel(z, labels, top=5)
    panel.T.value = 2.0
    torch.testing.assert_close(torch.tensor(panel.figure.data[0].y), rl.softmax_t(z, panel.T.value)[top5])


def test_live_loss_curve_follows_the_history():
    from ragcomp_lab.distill import History

    curve, hist = widgets.LiveLossCurve(every=2), History()
    for step in range(1, 6):
        hist.losses.append({"step": step, "total": 3.0 / step, "hard": 2.0 / step, "soft": 1.0 / step})
        curve.on_step(hist.losses[-1], hist)
    names = [t.name for t in curve.figure.data]
    assert names == ["total", "hard", "soft"]
    assert list(curve.figure.data[0].x) == [1, 2, 3, 4] and curve.figure.data[0].y[-1] == 3.0 / 4  # drawn at step 4
    import pytest
    with pytest.raises(ValueError, match="every=0"):
        widgets.LiveLossCurve(every=0)


def test_loss_curves_draw_each_logged_part():
    from ragcomp_lab.distill import History

    h = History(losses=[{"step": i + 1, "total": 3.0 - i, "hard": 2.0, "soft": 4.0 - i, "lr": 1e-3} for i in range(3)])
    fig = viz.loss_curves(h)
    assert [t.name for t in fig.data] == ["total", "hard", "soft"]
    assert list(fig.data[0].x) == [1, 2, 3] and list(fig.data[2].y) == [4.0, 3.0, 2.0]


def test_seed_bars_show_mean_and_standard_deviation_with_the_reference():
    fig = viz.seed_bars({"no teacher": {"f1": [0.1, 0.3]}, "distilled": {"f1": [0.4, 0.6]}}, {"f1": 0.9})
    bars = [t for t in fig.data if t.type == "bar"]
    assert [b.name for b in bars] == ["no teacher", "distilled"]
    assert bars[1].y[0] == pytest.approx(50) and bars[1].error_y.array[0] == pytest.approx(100 * 0.1414, rel=1e-3)
    assert fig.data[-1].name == "teacher" and fig.data[-1].y[0] == pytest.approx(90)
    skip = viz.seed_bars({"a": {"f1": [0.2, None]}})  # None: not applicable on that seed
    assert skip.data[0].y[0] == pytest.approx(20)


def test_size_tradeoff_places_each_student_by_speedup_and_quality_kept():
    rows = [{"n_layers": n, "decode_speedup": s, "f1_retained": f, "rouge_l_retained": f, "non_embedding_params": p}
            for n, s, f, p in [(3, 6.0, 0.1, 10e6), (6, 3.4, 0.3, 21e6)]]
    fig = viz.size_tradeoff(rows)
    assert list(fig.data[0].x) == [6.0, 3.4] and list(fig.data[0].y) == [10.0, 30.0]
    assert list(fig.data[0].text) == ["3 layers", "6 layers"]


def test_similarity_maps_share_one_colour_scale():
    a = rl.losses.token_similarity(torch.randn(1, 5, 8))[0]
    fig = viz.similarity_maps({"teacher": a, "student": a * 0.5}, labels=list("abcde"))
    assert [t.zmin for t in fig.data] == [-1, -1] and [t.zmax for t in fig.data] == [1, 1]
    assert fig.data[0].z[2][2] == pytest.approx(1.0, abs=1e-6) and list(fig.data[1].x) == list("abcde")


def test_layer_losses_one_line_per_loss():
    fig = viz.layer_losses({"feature": {"0<-0": 0.1, "1<-6": 0.5}, "relation": {"0<-0": 0.01, "1<-6": 0.2}})
    assert [t.name for t in fig.data] == ["feature", "relation"] and list(fig.data[0].x) == ["0<-0", "1<-6"]


def test_f1_curve_draws_each_kind_against_steps_and_the_reference_line():
    points = [{"step": 250, "f1": 0.1, "f1_single_fact": 0.15, "f1_two_hop": 0.0},
              {"step": 500, "f1": 0.3, "f1_single_fact": 0.4, "f1_two_hop": None}]
    fig = viz.f1_curve(points, reference=0.996)
    assert [t.name for t in fig.data] == ["all answerable", "single fact", "two hop"]
    assert list(fig.data[0].x) == [250, 500] and list(fig.data[1].y) == [0.15, 0.4]
    assert fig.data[2].y[1] is None  # a kind with no question in the probe is a gap, not a 0
    assert fig.layout.shapes[0].y0 == 0.996 and "teacher 0.996" in fig.layout.annotations[0].text


def test_f1_curves_draw_one_line_per_run_on_shared_steps():
    runs = {"no teacher": [{"step": 250, "f1": 0.02}, {"step": 500, "f1": 0.1}],
            "distilled": [{"step": 250, "f1": 0.05}, {"step": 500, "f1": None}]}
    fig = viz.f1_curves(runs, reference=0.996)
    assert [t.name for t in fig.data] == ["no teacher", "distilled"]
    assert list(fig.data[0].y) == [0.02, 0.1] and list(fig.data[1].x) == [250, 500] and fig.data[1].y[1] is None
    assert fig.layout.shapes[0].y0 == 0.996
    two_hop = viz.f1_curves({"a": [{"step": 1, "f1": 0.5, "f1_two_hop": 0.25}]}, key="f1_two_hop")
    assert list(two_hop.data[0].y) == [0.25] and not two_hop.layout.shapes
