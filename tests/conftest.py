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
