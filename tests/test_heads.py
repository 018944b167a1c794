"""Trimmed output heads: the logits they keep equal the full head's, the rest can never be generated,
each prompt of a batch gets its own set, and generation equals the full model's restricted by
Hugging Face's own logits masking."""
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

import ragcomp_lab as rl
from ragcomp_lab import heads, models
from ragcomp_lab.data.encode import collate, encode_pair
from ragcomp_lab.distill import answer_logits

TINY = dict(num_attention_heads=2, num_key_value_heads=1, head_dim=32, hidden_size=64, intermediate_size=128)


@pytest.fixture(scope="module")
def tiny(teacher_and_tok):
    """A 2-layer random model with the teacher's vocabulary and tied embedding, and its tokenizer."""
    big, tok = teacher_and_tok
    return models.make_student(big, num_hidden_layers=2, seed=3, **TINY), tok


def fresh(tiny):
    import copy

    return copy.deepcopy(tiny[0])


PROMPTS = ["Context: The Zelbor Max weighs 12 kilograms.\nQuestion: How heavy is the Zelbor Max?\nAnswer:",
           "Context: Quumoor lies on the river Tessel.\nQuestion: Which river flows through Quumoor?\nAnswer:"]


class Allowed(LogitsProcessor):
    """Hugging Face's reference: the full model's scores with every id outside a row's set at -inf."""

    def __init__(self, sets):
        self.sets = sets

    def __call__(self, input_ids, scores):
        out = torch.full_like(scores, float("-inf"))
        for b, ids in enumerate(self.sets):
            out[b, ids] = scores[b, ids]
        return out


def test_general_ids_hold_eos_digits_and_the_refusal(tiny):
    _, tok = tiny
    general = set(heads.general_ids(tok))
    assert tok.eos_token_id in general
    assert set(heads.token_ids(tok, [" The context does not say."])) <= general
    assert all(tok(str(d), add_special_tokens=False)["input_ids"][0] in general for d in range(10))
    assert len(general) < 400  # a few hundred rows, not the vocabulary
    river = heads.token_ids(tok, [" river"])
    assert len(river) == 1 and river[0] not in general
    assert set(heads.general_ids(tok, corpus=[" river on the river, a river."], top=1)) - general == set(river)
    with pytest.raises(ValueError, match="top=-1"):
        heads.general_ids(tok, top=-1)


def test_fixed_head_keeps_the_full_heads_logits_on_its_ids(tiny):
    model, tok = fresh(tiny), tiny[1]
    x = tok(PROMPTS[0], return_tensors="pt")
    with torch.no_grad():
        full = model(**x).logits
    ids = heads.token_ids(tok, PROMPTS) + heads.general_ids(tok)
    layers = models.param_counts(model)["non_embedding"]
    heads.use_fixed_head(model, ids)
    with torch.no_grad():
        trimmed = model(**x).logits
    assert models.param_counts(model)["non_embedding"] == layers  # its rows are the embedding's, counted once
    keep = torch.tensor(sorted(set(ids)))
    torch.testing.assert_close(trimmed[..., keep], full[..., keep])
    outside = torch.ones(full.shape[-1], dtype=torch.bool)
    outside[keep] = False
    assert torch.isinf(trimmed[..., outside]).all() and (trimmed[..., outside] < 0).all()
    assert models.weights_per_token(model) == models.param_counts(model)["non_embedding"] + len(keep) * 64
    with pytest.raises(ValueError, match="one weight row per id"):
        heads.FixedHead(torch.zeros(3, 4), [1, 2], 10)
    with pytest.raises(ValueError, match="distinct and within 0..9"):
        heads.FixedHead(torch.zeros(2, 4), [1, 12], 10)


def test_prompt_head_generates_what_the_restricted_full_model_generates(tiny):
    model, tok = fresh(tiny), tiny[1]
    general = heads.general_ids(tok)
    tok.padding_side = "left"
    x = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    sets = [sorted(set(heads.token_ids(tok, [p])) | set(general)) for p in PROMPTS]
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        reference = model.generate(**x, logits_processor=LogitsProcessorList([Allowed(sets)]), **kw)
        heads.use_prompt_head(model, general)
        out = model.generate(**x, **kw)
    torch.testing.assert_close(out, reference, rtol=0, atol=0)
    for b, row in enumerate(out[:, x["input_ids"].shape[1]:]):
        assert set(row.tolist()) <= set(sets[b]) | {tok.pad_token_id}
    # each prompt of the batch got its own set: alone, it gives the same tokens
    with torch.no_grad():
        alone = model.generate(**tok(PROMPTS[1:], return_tensors="pt", add_special_tokens=False), **kw)
    assert alone[0, -8:].tolist() == out[1, -8:].tolist()
    assert models.param_counts(model)["embedding"] == 49152 * 64  # its rows are the embedding's
    assert model.get_output_embeddings().out_features == len(sets[1])  # the rows the last prompt gave


def test_answer_logits_of_a_prompt_head_see_the_prompt_only(tiny):
    model, tok = fresh(tiny), tiny[1]
    answer = "Zelbor Quux"  # "Quux" is in neither prompt nor the general set
    batch = collate([encode_pair(tok, PROMPTS[0], answer), encode_pair(tok, PROMPTS[1], "Tessel")], tok.pad_token_id)
    with torch.no_grad():
        full = answer_logits(model, batch)[0]
        heads.use_prompt_head(model, heads.general_ids(tok))
        trimmed = answer_logits(model, batch)[0]
    labels = batch["labels"][:, 1:][batch["labels"][:, 1:] != -100]
    reachable = torch.isfinite(trimmed.gather(1, labels[:, None]))[:, 0]
    quux = set(tok(" Quux", add_special_tokens=False)["input_ids"]) - set(tok(PROMPTS[0])["input_ids"])
    assert quux and not all(reachable[: len(labels) - 1])  # some answer token of row 0 is out of reach
    finite = torch.isfinite(trimmed)
    torch.testing.assert_close(trimmed[finite], full[finite])
    assert rl.evaluation.answer_perplexity(model, tok, {"prompt": PROMPTS[1:], "answer": ["Tessel"],
                                                         "kind": ["single_fact"]}) < float("inf")


def test_coverage_counts_answers_a_head_can_produce(tiny):
    _, tok = tiny
    general = heads.general_ids(tok)
    answers = ["12 kilograms", "Tessel", "Blorptastic"]
    prompts = PROMPTS + ["Nothing here."]
    assert heads.coverage(general, tok, answers, prompts) == pytest.approx(2 / 3)
    assert heads.coverage(general, tok, ["12 kilograms"]) == 1.0
    with pytest.raises(ValueError, match="3 answers but 2 prompts"):
        heads.coverage(general, tok, answers, PROMPTS)


@pytest.mark.parametrize("kind", ["fixed", "prompt"])
def test_a_trimmed_head_survives_save_load_and_weight_only_int8(tiny, tmp_path, kind):
    model, tok = fresh(tiny), tiny[1]
    general = heads.general_ids(tok)
    if kind == "fixed":
        heads.use_fixed_head(model, heads.token_ids(tok, PROMPTS) + general)
    else:
        heads.use_prompt_head(model, general)
    x = tok(PROMPTS[0], return_tensors="pt", add_special_tokens=False)
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    for variant in (model, rl.quantize(model, rl.QuantConfig(bits=8, mode="weight_only"))):
        with torch.no_grad():
            before = variant.generate(**x, **kw)
        back = rl.load(rl.save(variant, tmp_path / f"{kind}-{id(variant)}"))
        assert type(back.get_output_embeddings()) is type(model.get_output_embeddings())
        with torch.no_grad():
            assert back.generate(**x, **kw).tolist() == before.tolist()


def test_use_prompt_head_needs_a_tied_head(tiny):
    model, tok = fresh(tiny), tiny[1]
    heads.use_fixed_head(model, [1, 2, 3])
    with pytest.raises(ValueError, match="tied to the input embedding"):
        heads.use_prompt_head(model, heads.general_ids(tok))


def test_a_student_saved_without_its_frozen_embedding_loads_it_back_from_the_teacher(tiny, tmp_path):
    """The shipped student's embedding is the teacher's: save leaves it out, load takes it back from
    the model given as fill, bit for bit, and refuses a model whose embedding differs."""
    model, tok = fresh(tiny), tiny[1]
    heads.use_prompt_head(model, heads.general_ids(tok))
    emb = "model.embed_tokens.weight"
    x = tok(PROMPTS[0], return_tensors="pt", add_special_tokens=False)
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    for variant in (model, rl.quantize(model, rl.QuantConfig(bits=8, mode="weight_only"))):
        full = rl.save(variant, tmp_path / f"full-{id(variant)}")
        lean = rl.save(variant, tmp_path / f"lean-{id(variant)}", omit=[emb])
        saved = (full / "model.safetensors").stat().st_size - (lean / "model.safetensors").stat().st_size
        assert saved >= model.get_input_embeddings().weight.numel() * 4  # FP32: 4 bytes a weight left out
        with pytest.raises(ValueError, match="pass fill="):
            rl.load(lean)
        back = rl.load(lean, fill=tiny[0])  # the untrimmed original holds the same embedding
        with torch.no_grad():
            assert back.generate(**x, **kw).tolist() == variant.generate(**x, **kw).tolist()
    other = fresh(tiny)
    with torch.no_grad():
        other.get_input_embeddings().weight[5, 0] += 1e-3
    with pytest.raises(ValueError, match="is not the tensor"):
        rl.load(lean, fill=other)
    with pytest.raises(ValueError, match="fill has no tensor"):
        rl.load(lean, fill={})
    with pytest.raises(ValueError, match="names no tensor"):
        rl.save(model, tmp_path / "bad", omit=["model.embed.weight"])
    assert not (tmp_path / "bad").exists()


def test_the_shipped_student_format_round_trips_with_fp16_layers_and_the_teachers_embedding(tiny, tmp_path):
    """save_student keeps FP16 layers and no embedding; load_student widens them to FP32 and takes
    the teacher's own embedding rows, and refuses a teacher whose embedding differs."""
    teacher, tok = tiny
    student = models.make_student(teacher, keep_layers=[1])
    heads.use_prompt_head(student, heads.general_ids(tok))
    folder = models.save_student(student, tmp_path / "student")
    back, tok_back = models.load_student(teacher=(teacher, tok), folder=folder)
    assert tok_back is tok and back.dtype == torch.float32
    torch.testing.assert_close(back.get_input_embeddings().weight, teacher.get_input_embeddings().weight,
                               rtol=0, atol=0)
    expected = fresh((student, tok))
    with torch.no_grad():
        for name, p in expected.named_parameters():
            if name != models.EMBEDDING:
                p.copy_(p.half().float())  # what FP16 storage keeps
    x = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        torch.testing.assert_close(back(**x).logits, expected(**x).logits, rtol=0, atol=0)
    stored = (folder / "model.safetensors").stat().st_size
    assert stored < models.param_counts(student)["non_embedding"] * 2 + 100_000  # FP16 layers, no embedding
    q8, _ = models.load_student(quantized=True, teacher=(teacher, tok), folder=folder)
    assert isinstance(q8.model.layers[0].mlp.down_proj, rl.quant.QuantLinear)
    other = fresh(tiny)
    with torch.no_grad():
        other.get_input_embeddings().weight[7, 1] += 0.5
    with pytest.raises(ValueError, match="is not the tensor"):
        models.load_student(teacher=(other, tok), folder=folder)
    with pytest.raises(FileNotFoundError, match="make student"):
        models.load_student(teacher=(teacher, tok), folder=tmp_path / "none")
