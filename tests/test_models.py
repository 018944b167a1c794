import pytest
import torch

import ragcomp_lab as rl
from ragcomp_lab import models


def test_the_teacher_is_smollm2_135m_instruct(teacher_and_tok):
    teacher, tok = teacher_and_tok
    cfg = teacher.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == ("llama", 30, 576, 49152)
    assert cfg.tie_word_embeddings and not hasattr(cfg, "quantization_config")
    assert models.param_counts(teacher) == {"embedding": 49152 * 576, "non_embedding": 106_203_456,
                                            "total": 134_515_008}
    assert tok.decode(tok("Veltrona Labs").input_ids) == "Veltrona Labs"
    assert not teacher.training


def test_the_teacher_copies_a_fact_from_the_context(teacher_and_tok):
    teacher, tok = teacher_and_tok
    prompt = "Context: Veltrona Labs is based in Darnmoor.\nQuestion: Where is Veltrona Labs based?\nAnswer:"
    ids = tok(prompt, return_tensors="pt").input_ids
    out = teacher.generate(ids, max_new_tokens=16, do_sample=False)
    assert "Darnmoor" in tok.decode(out[0, ids.shape[1]:])


def test_layer_dropped_student_is_an_independent_copy(teacher_and_tok):
    teacher, _ = teacher_and_tok
    keep = [0, 7, 15, 29]
    student = models.make_student(teacher, keep_layers=keep)
    assert student.config.num_hidden_layers == 4 and teacher.config.num_hidden_layers == 30
    teacher_storage = {p.untyped_storage().data_ptr() for p in teacher.parameters()}
    assert not any(p.untyped_storage().data_ptr() in teacher_storage for p in student.parameters())
    for i, j in enumerate(keep):
        torch.testing.assert_close(student.model.layers[i].mlp.up_proj.weight, teacher.model.layers[j].mlp.up_proj.weight)
        assert student.model.layers[i].self_attn.layer_idx == i  # its own KV-cache slot
    torch.testing.assert_close(student.model.norm.weight, teacher.model.norm.weight)
    before = teacher.model.layers[7].mlp.up_proj.weight.clone()
    with torch.no_grad():
        student.model.layers[1].mlp.up_proj.weight.add_(1.0)
    torch.testing.assert_close(teacher.model.layers[7].mlp.up_proj.weight, before)
    counts = models.param_counts(student)
    assert counts["embedding"] == 49152 * 576 and counts["non_embedding"] == 4 * (106_203_456 - 576) // 30 + 576  # 4 layers + final norm


def test_keeping_every_layer_reproduces_the_teacher(teacher_and_tok):
    teacher, tok = teacher_and_tok
    clone = models.make_student(teacher, keep_layers=list(range(30)))
    ids = tok("Question: where is Darnmoor?", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(clone(ids).logits, teacher(ids).logits, rtol=0, atol=0)


def test_student_from_scratch_is_smaller_and_seeded(teacher_and_tok):
    teacher, _ = teacher_and_tok
    a = models.make_student(teacher, num_hidden_layers=2, hidden_size=128, intermediate_size=256,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=32, seed=3)
    b = models.make_student(teacher, num_hidden_layers=2, hidden_size=128, intermediate_size=256,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=32, seed=3)
    assert a.config.vocab_size == teacher.config.vocab_size
    assert models.param_counts(a)["total"] < models.param_counts(teacher)["total"] / 5
    torch.testing.assert_close(a.model.layers[0].mlp.up_proj.weight, b.model.layers[0].mlp.up_proj.weight)


@pytest.mark.parametrize("kwargs, message", [
    (dict(keep_layers=[]), "non-empty list"), (dict(keep_layers=[0, 30]), r"30, outside the teacher's layers 0..29"),
    (dict(keep_layers=[3, 1]), "strictly increasing"), (dict(keep_layers=[1, 1]), "strictly increasing"),
    (dict(keep_layers="0,1"), "keep_layers='0,1'"), (dict(vocab_size=1000), "keep the teacher's vocab_size"),
    (dict(keep_layers=[0, 1], hidden_size=64), "cannot change a layer-dropped student"),
    (dict(num_layerz=2), r"unknown config field\(s\) \['num_layerz'\]"),
])
def test_bad_student_specs_are_named(teacher_and_tok, kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.make_student(teacher_and_tok[0], **kwargs)


def test_load_any_local_checkpoint_and_refuse_a_missing_one(tmp_path, teacher_and_tok):
    teacher, tok = teacher_and_tok
    tiny = models.make_student(teacher, num_hidden_layers=1, hidden_size=64, intermediate_size=128,
                               num_attention_heads=2, num_key_value_heads=1, head_dim=32)
    tiny.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    model, tok2 = models.load_teacher(tmp_path / "tiny")
    assert model.config.num_hidden_layers == 1 and tok2.vocab_size == tok.vocab_size
    with pytest.raises(FileNotFoundError, match="no Hugging Face checkpoint at .*nowhere.*nothing is downloaded"):
        models.load_teacher(tmp_path / "nowhere")


def test_conversion_is_atomic_and_cached(tmp_path, monkeypatch):
    """A fresh cache builds the checkpoint through a temporary folder renamed into place."""
    monkeypatch.setenv("RAGCOMP_LAB_CACHE", str(tmp_path))
    model, _ = models.load_teacher()
    files = sorted(p.name for p in (tmp_path / models.TEACHER_DIR).iterdir())
    assert "model.safetensors" in files and "tokenizer.json" in files
    assert [p.name for p in tmp_path.iterdir()] == [models.TEACHER_DIR]  # no temporary folder left behind
    assert models.param_counts(model)["total"] == 134_515_008


def test_default_teacher_merges_the_shipped_adapter(teacher_and_tok, monkeypatch, tmp_path):
    import json

    from ragcomp_lab import teacher_adapter

    teacher, _ = teacher_and_tok
    base, _ = models.load_teacher(adapter=False)
    assert type(base) is type(teacher) and models.param_counts(base) == models.param_counts(teacher)
    assert not torch.equal(base.model.layers[0].self_attn.q_proj.weight, teacher.model.layers[0].self_attn.q_proj.weight)
    torch.testing.assert_close(base.model.embed_tokens.weight, teacher.model.embed_tokens.weight)  # LoRA leaves it
    meta = json.loads((teacher_adapter.ADAPTER_DIR / "training.json").read_text())  # how it was trained ships too
    assert meta["command"] == "python -m ragcomp_lab.teacher_adapter" and meta["recipe"] == teacher_adapter.RECIPE
    assert meta["train_rows"] == len(teacher_adapter.training_rows()) and meta["testbed"] == rl.data.TESTBED
    assert len(meta["losses"]) == meta["steps"] and meta["losses"][-1] < meta["losses"][0] / 10
    for folder in (teacher_adapter.ADAPTER_DIR, teacher_adapter.FIRST_ADAPTER_DIR):
        assert (folder / "adapter_model.safetensors").stat().st_size < 12_000_000
    # caches and runs are named by the adapter that made the teacher: another adapter, another name
    assert models.adapter_digest() == models.adapter_digest(teacher_adapter.ADAPTER_DIR)
    assert models.adapter_digest() != models.adapter_digest(teacher_adapter.FIRST_ADAPTER_DIR)
    with pytest.raises(FileNotFoundError, match=f"no LoRA adapter in {tmp_path}"):
        models.load_teacher(adapter=tmp_path)
    monkeypatch.setattr(models, "ADAPTER_DIR", tmp_path / "missing")  # the adapter's location is the zoo's
    with pytest.raises(FileNotFoundError, match="python -m ragcomp_lab.teacher_adapter"):
        models.load_teacher()


def test_answer_loss_is_the_causal_lm_loss_on_answer_tokens(teacher_and_tok):
    from ragcomp_lab.data.encode import collate, encode_pair
    from ragcomp_lab.teacher_adapter import answer_loss

    teacher, tok = teacher_and_tok
    tiny = models.make_student(teacher, num_hidden_layers=1, hidden_size=64, intermediate_size=128,
                               num_attention_heads=2, num_key_value_heads=1, head_dim=32)
    batch = collate([encode_pair(tok, "Question: where?\nAnswer:", "Darnmoor"),
                     encode_pair(tok, "Q: when was it founded, and by whom?\nA:", "1987")], tok.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(answer_loss(tiny, batch), tiny(**batch).loss)


def test_weights_per_token_are_every_matrix_a_token_multiplies(teacher_and_tok):
    teacher, _ = teacher_and_tok
    student = models.make_student(teacher, keep_layers=[0, 15, 29])
    for m in (teacher, student):
        linear = sum(x.weight.numel() for x in m.modules() if isinstance(x, torch.nn.Linear))  # layers + head
        norms = sum(p.numel() for n, p in m.named_parameters() if "norm" in n)
        assert models.weights_per_token(m) == linear + norms
    # the head (49,152 x 576, tied to the embedding) is the same in both: 3 of 30 layers is far from 10x
    assert models.weights_per_token(teacher) == 106_203_456 + 49152 * 576
    assert models.weights_per_token(teacher) / models.weights_per_token(student) < 3.5
