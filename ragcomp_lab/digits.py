"""A distillation you can rerun in seconds: scikit-learn's bundled 8x8 digits.

A wide MLP teacher learns from the full training split; a small student sees only a few
labelled images, trained with the hard loss alone (alpha = 1) or with the teacher's soft
targets too. Same code path, same data, same steps: only alpha and T change.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import DistillConfig
from .losses import distillation_loss


@dataclass
class DigitsTask:
    x_train: torch.Tensor  # (N, 64) every training image, for the teacher
    y_train: torch.Tensor  # (N,)
    x_labelled: torch.Tensor  # (n, 64) the student's small labelled subset
    y_labelled: torch.Tensor
    x_test: torch.Tensor  # (M, 64) held out from both
    y_test: torch.Tensor


def load_task(n_labelled: int = 60, seed: int = 0, test_size: float = 0.3) -> DigitsTask:
    """Split digits (1797 images, pixel values 0..16) into train / test; draw the labelled subset."""
    from sklearn.datasets import load_digits  # ships with scikit-learn: no download
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    if not (10 <= n_labelled <= int(len(x) * (1 - test_size))):
        raise ValueError(f"n_labelled={n_labelled!r} is not allowed: use 10..{int(len(x) * (1 - test_size))}")
    x_tr, x_te, y_tr, y_te = train_test_split(x / 16.0, y, test_size=test_size, stratify=y, random_state=seed)
    x_lab, _, y_lab, _ = train_test_split(x_tr, y_tr, train_size=n_labelled, stratify=y_tr, random_state=seed)
    t = lambda a, dt=torch.float32: torch.as_tensor(a, dtype=dt)  # noqa: E731
    return DigitsTask(t(x_tr), t(y_tr, torch.long), t(x_lab), t(y_lab, torch.long), t(x_te), t(y_te, torch.long))


def mlp(hidden: int, depth: int = 1, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers, width = [], 64
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, 10))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item()


def train_teacher(task: DigitsTask, hidden: int = 256, steps: int = 300, seed: int = 0) -> nn.Module:
    """The teacher: a 2-hidden-layer MLP on every training image (full batch, Adam)."""
    model = mlp(hidden, depth=2, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(task.x_train), task.y_train).backward()
        opt.step()
    return model.eval()


def train_student(task: DigitsTask, teacher: nn.Module, cfg: DistillConfig, hidden: int = 32) -> tuple[nn.Module, list]:
    """A small MLP on the labelled subset with L_total = alpha * hard + (1 - alpha) * soft.

    Returns the student and its per-step LossParts as floats. alpha = 1 is training without a
    teacher: the soft term is computed but weighs nothing.
    """
    student = mlp(hidden, depth=1, seed=cfg.seed)
    with torch.no_grad():
        teacher_logits = teacher(task.x_labelled)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history = []
    for _ in range(cfg.steps):
        opt.zero_grad()
        parts = distillation_loss(student(task.x_labelled), teacher_logits, task.y_labelled, cfg.T, cfg.alpha)
        parts.total.backward()
        opt.step()
        history.append({k: v.item() for k, v in parts._asdict().items()})
    return student.eval(), history


def student_accuracies(task: DigitsTask, teacher: nn.Module, T: float, alpha: float, seeds=range(5),
                       steps: int = 300, lr: float = 1e-2) -> list[float]:
    """Held-out accuracy of one student per seed, all trained at the same T and alpha."""
    return [accuracy(train_student(task, teacher, DistillConfig(T=T, alpha=alpha, steps=steps, lr=lr, seed=s))[0],
                     task.x_test, task.y_test) for s in seeds]


def sweep(task: DigitsTask, teacher: nn.Module, Ts, alphas, seeds=range(3), **kw) -> list[dict]:
    """Mean held-out accuracy over seeds for every (T, alpha): rows {T, alpha, accuracy}."""
    rows = []
    for T in Ts:
        for a in alphas:
            accs = student_accuracies(task, teacher, T, a, seeds, **kw)
            rows.append({"T": float(T), "alpha": float(a), "accuracy": sum(accs) / len(accs)})
    return rows
