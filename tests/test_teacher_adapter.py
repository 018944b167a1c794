"""The adapter's training on a 2-layer stand-in teacher: an interrupted run resumes from its
checkpoint and ends with the adapter an uninterrupted run writes."""
import json

import pytest
import torch
from safetensors.torch import load_file

from ragcomp_lab import models, teacher_adapter

TINY = dict(num_attention_heads=2, num_key_value_heads=1, head_dim=32, hidden_size=64, intermediate_size=128)
RECIPE = dict(batch_size=2, warmup_steps=2, autocast=None)


@pytest.fixture()
def stand_in(teacher_and_tok, monkeypatch):
    big, tok = teacher_and_tok
    rows = teacher_adapter.training_rows().select(range(10))  # 5 steps of 2
    monkeypatch.setattr(models, "load_teacher",
                        lambda adapter=False: (models.make_student(big, num_hidden_layers=2, seed=7, **TINY), tok))
    monkeypatch.setattr(teacher_adapter, "training_rows", lambda recipe: rows)
    monkeypatch.setattr(teacher_adapter, "CHECKPOINT_EVERY", 2)


def test_an_interrupted_run_resumes_to_the_same_adapter(stand_in, tmp_path, monkeypatch):
    whole = teacher_adapter.train_adapter(tmp_path / "whole", progress=False, recipe=RECIPE)
    calls = {"n": 0}
    loss = teacher_adapter.answer_loss

    def breaks_at_step_4(model, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return loss(model, batch)
    monkeypatch.setattr(teacher_adapter, "answer_loss", breaks_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        teacher_adapter.train_adapter(tmp_path / "broken", progress=False, recipe=RECIPE, checkpoint_dir=tmp_path / "ckpt")
    assert not (tmp_path / "broken").exists()  # nothing half-written
    assert json.loads((tmp_path / "ckpt" / "latest" / "state.json").read_text())["step"] == 2
    monkeypatch.setattr(teacher_adapter, "answer_loss", loss)
    resumed = teacher_adapter.train_adapter(tmp_path / "broken", progress=False, recipe=RECIPE,
                                            checkpoint_dir=tmp_path / "ckpt")
    assert resumed["steps"] == whole["steps"] == 5
    assert resumed["losses"] == pytest.approx(whole["losses"], rel=1e-4)
    a = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    b = load_file(tmp_path / "broken" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for folder, meta in (("whole", whole), ("broken", resumed)):  # each adapter ships with how it was trained
        written = json.loads((tmp_path / folder / "training.json").read_text())
        assert written["steps"] == 5 and written["losses"] == meta["losses"] and written["recipe"] == meta["recipe"]
    with pytest.raises(ValueError, match="another recipe"):
        teacher_adapter.train_adapter(tmp_path / "other", progress=False, recipe={**RECIPE, "lr": 5e-4},
                                      checkpoint_dir=tmp_path / "ckpt")


def test_a_second_stage_starts_from_the_first_stages_adapter_trained_once(stand_in, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGCOMP_LAB_CACHE", str(tmp_path / "cache"))
    first = dict(RECIPE, init=None)
    runs = []
    train = teacher_adapter.train_adapter
    monkeypatch.setattr(teacher_adapter, "train_adapter", lambda *a, **k: runs.append(k["recipe"]) or train(*a, **k))
    folder = teacher_adapter.first_stage(first, progress=False)
    assert runs == [first] and (folder / "adapter_model.safetensors").is_file()
    assert teacher_adapter.first_stage(first, progress=False) == folder and runs == [first]  # trained once
    # a second stage at learning rate 0 moves nothing: it writes the first stage's adapter back
    meta = train(tmp_path / "second", progress=False, recipe=dict(RECIPE, init=first, lr=0.0))
    assert meta["recipe"]["init"] == first and runs == [first]
    a = load_file(folder / "adapter_model.safetensors")
    b = load_file(tmp_path / "second" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    moved = train(tmp_path / "moved", progress=False, recipe=dict(RECIPE, init=first))
    c = load_file(tmp_path / "moved" / "adapter_model.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a) and moved["losses"][0] == pytest.approx(meta["losses"][0])
