import os

# Everything runs offline: no hub download is ever attempted from the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from hypothesis import settings  # noqa: E402

# The machine is shared and noisy: a per-example deadline would fail on timing, not on behaviour.
settings.register_profile("lab", deadline=None, database=None)
settings.load_profile("lab")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def teacher_and_tok():
    """The shipped teacher, converted once into the user cache (about 35 s the first time)."""
    from ragcomp_lab import models

    return models.load_teacher()


# A stand-in for the shipped teacher in the experiment tests: 2 tiny layers, the real code path in seconds.
TINY = dict(num_attention_heads=2, num_key_value_heads=1, head_dim=32, hidden_size=64, intermediate_size=128)


@pytest.fixture(scope="session")
def make_bed(teacher_and_tok):
    """make_bed(n_train, n_test, runs_dir=None) -> experiments.Bed: the 2-layer stand-in teacher on the
    first rows of the seed-0 train and test splits (the test rows with teacher answers)."""
    from ragcomp_lab import data, experiments, models

    big, tok = teacher_and_tok
    teacher = models.make_student(big, num_hidden_layers=2, seed=1, **TINY)
    splits = data.rag_splits(seed=0)

    def make(n_train: int, n_test: int, runs_dir=None):
        test = data.with_teacher_answers(splits["test"].select(range(n_test)))
        return experiments.Bed(teacher, tok, splits["train"].select(range(n_train)), test, runs_dir=runs_dir)

    return make
