import pytest
import torch

import ragcomp_lab as rl
from ragcomp_lab import digits


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    task = digits.load_task(n_labelled=60, seed=0)
    return task, digits.train_teacher(task)


def test_split_is_disjoint_and_sized(setup):
    task, teacher = setup
    assert len(task.x_labelled) == 60 and set(task.y_labelled.tolist()) == set(range(10))
    assert len(task.x_train) + len(task.x_test) == 1797
    assert digits.accuracy(teacher, task.x_test, task.y_test) > 0.95


def test_distillation_beats_hard_labels_alone_on_held_out_digits(setup):
    task, teacher = setup
    acc = {}
    for name, T, alpha in [("hard", 1.0, 1.0), ("kd", 4.0, 0.1)]:
        runs = [digits.train_student(task, teacher, rl.DistillConfig(T=T, alpha=alpha, steps=300, lr=1e-2, seed=s))[0]
                for s in range(3)]
        acc[name] = sum(digits.accuracy(m, task.x_test, task.y_test) for m in runs) / 3
    assert acc["kd"] > acc["hard"] + 0.03, acc


def test_same_config_same_losses(setup):
    task, teacher = setup
    cfg = rl.DistillConfig(T=2.0, alpha=0.5, steps=20, lr=1e-2, seed=1)
    h1, h2 = digits.train_student(task, teacher, cfg)[1], digits.train_student(task, teacher, cfg)[1]
    assert h1 == h2 and h1[-1]["total"] < h1[0]["total"]
    assert set(h1[0]) == {"total", "hard", "soft"}


def test_bad_labelled_count():
    with pytest.raises(ValueError, match="n_labelled=5"):
        digits.load_task(n_labelled=5)
