import os

# Everything runs offline: no hub download is ever attempted from the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from hypothesis import settings  # noqa: E402

# The machine is shared and noisy: a per-example deadline would fail on timing, not on behaviour.
settings.register_profile("lab", deadline=None, database=None)
settings.load_profile("lab")
