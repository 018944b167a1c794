"""Quiet model loading: transformers 5 draws a "Loading weights" progress bar on every load, and
peft's merge warns about a renamed transformers method. Neither belongs in a chapter's output."""
from __future__ import annotations

import contextlib
import warnings


@contextlib.contextmanager
def quiet_loading():
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
