import json
import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import ragcomp_lab as rl
from ragcomp_lab.quant import api, linear, primitives, serialize
from ragcomp_lab.quant.linear import QuantEmbedding, QuantLinear

with warnings.catch_warnings():  # torch.ao.quantization is deprecated, but it is the reference
    warnings.simplefilter("ignore")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

GRANULARITIES = [("per_tensor", None), ("per_channel", None), ("per_group", 16)]


def tiny(tied: bool = True, seed: int = 0):
    """A 2-layer Llama with the teacher's layout (d=64, 2 heads, GQA 2:1), random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=64,
                      tie_word_embeddings=tied)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def model():
    return tiny()


IDS = torch.randint(0, 256, (2, 11), generator=torch.Generator().manual_seed(1))


def logits(m):
    with torch.inference_mode():
        return m(IDS).logits


def _w(seed, shape=(40, 64)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 0.05, torch.randn(shape[0], generator=g)


# ---- QuantLinear against the primitives and PyTorch's references ----------------------------

@settings(max_examples=40)
@given(bits=st.integers(2, 8), symmetric=st.booleans(), gran=st.sampled_from(GRANULARITIES), seed=st.integers(0, 999))
def test_quant_linear_is_the_primitives_exactly(bits, symmetric, gran, seed):
    w, b = _w(seed)
    m = QuantLinear.from_weight(w, b, bits, symmetric, *gran, scale_dtype="float32")
    scale, zp = primitives.qparams(w, bits, symmetric, *gran)
    q = primitives.quantize(w, scale, zp, bits, symmetric, *gran)
    deq = primitives.dequantize(q, scale, zp, *gran)
    assert torch.equal(m.codes(), q) and torch.equal(m.dequantized_weight(), deq)
    x = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(m(x), F.linear(x, deq, b))  # one block: the very same matmul


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_float16_scales_are_rounded_up_and_the_codes_use_them(bits):
    w, _ = _w(bits)
    m = QuantLinear.from_weight(w, bits=bits, granularity="per_group", group_size=32)
    s32, zp = primitives.qparams(w, bits, True, "per_group", 32)
    assert m.scale.dtype == torch.float16
    assert (m.scale.float() >= s32).all() and (m.scale.float() < s32 * (1 + 2**-10)).all()
    q = primitives.quantize(w, m.scale.float(), zp, bits, True, "per_group", 32)
    assert torch.equal(m.codes(), q)
    assert (m.dequantized_weight() - w).abs().max() <= m.scale.float().max() / 2 + 1e-7  # grid covers [min, max]


def test_blocks_of_rows_give_the_full_matmul(monkeypatch):
    w, b = _w(3, (300, 64))
    m = QuantLinear.from_weight(w, b, 4, False, "per_group", 16)
    x = torch.randn(2, 7, 64)
    whole = F.linear(x, m.dequantized_weight(), b)
    monkeypatch.setattr(linear, "BLOCK", 64 * 32)  # 32 rows a block, the last one short
    torch.testing.assert_close(m(x), whole, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("symmetric", [True, False])
def test_int8_per_channel_matches_torch_quantize_per_channel(symmetric):
    w, _ = _w(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8 if symmetric else torch.quint8,
                                       qscheme=torch.per_channel_symmetric if symmetric else torch.per_channel_affine)
        obs(w)
        scale, zp = obs.calculate_qparams()
        ref = torch.quantize_per_channel(w, scale, zp, 0, torch.qint8 if symmetric else torch.quint8)
    m = QuantLinear.from_weight(w, bits=8, symmetric=symmetric, scale_dtype="float32")
    assert torch.equal(m.codes(), ref.int_repr())
    q_min, q_max = primitives.int_range(8, symmetric)
    assert torch.equal(m.dequantized_weight(), torch.fake_quantize_per_channel_affine(w, scale.float(), zp.int(), 0,
                                                                                      q_min, q_max))


def test_packed_storage_is_real():
    w, _ = _w(6, (8, 64))
    for bits, width in [(8, 64), (4, 32), (3, 24), (2, 16)]:
        m = QuantLinear.from_weight(w, bits=bits)
        assert m.qweight.shape == (8, width) and m.qweight.element_size() == 1


def test_quant_embedding_reads_the_heads_rows():
    w, _ = _w(7, (50, 64))
    head = QuantLinear.from_weight(w, bits=3, symmetric=False, granularity="per_group", group_size=32)
    ids = torch.tensor([[0, 49, 7], [7, 7, 1]])
    assert torch.equal(QuantEmbedding(head)(ids), head.dequantized_weight()[ids])


@pytest.mark.parametrize("kwargs, message", [
    (dict(granularity="per_group", group_size=48), "group_size=48 does not divide in_features=64"),
    (dict(bits=9), "bits=9"), (dict(granularity="per_row"), "granularity='per_row'"),
    (dict(scale_dtype="bfloat16"), "scale_dtype='bfloat16'"), (dict(group_size=32), "group_size=32 is only allowed"),
])
def test_quant_linear_names_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantLinear.from_weight(_w(0)[0], **kwargs)


def test_float16_scale_overflow_is_refused():
    with pytest.raises(ValueError, match="overflows torch.float16.*scale_dtype='float32'"):
        QuantLinear.from_weight(torch.full((2, 32), 1e9), bits=8)


# ---- quantize(model, cfg) ------------------------------------------------------------------

MODES = [dict(mode="fp16"), dict(mode="bf16"), dict(bits=8), dict(bits=4, granularity="per_group", group_size=32),
         dict(bits=3, symmetric=False), dict(mode="dynamic")]


@pytest.mark.parametrize("cfg", MODES)
def test_quantize_leaves_the_input_untouched(model, cfg):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    out = rl.quantize(model, rl.QuantConfig(**cfg))
    assert out is not model and [type(m) for m in model.modules()] == types
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    assert not hasattr(model, api.ATTR) and getattr(out, api.ATTR).mode == rl.QuantConfig(**cfg).mode
    assert not torch.equal(logits(out).float(), logits(model))


def test_weight_only_replaces_every_linear_and_shares_the_tied_head(model):
    q = rl.quantize(model, rl.QuantConfig(bits=4, granularity="per_group", group_size=32))
    assert not any(type(m) is torch.nn.Linear for m in q.modules())
    assert isinstance(q.model.embed_tokens, QuantEmbedding) and q.model.embed_tokens.head is q.lm_head
    assert not any(k.startswith("model.embed_tokens") for k in q.state_dict())  # one copy of the table
    assert torch.equal(q.model.embed_tokens(IDS), q.lm_head.dequantized_weight()[IDS])
    assert q.generate(IDS[:1], max_new_tokens=3, do_sample=False).shape == (1, 14)


def test_skip_keeps_modules_in_float_by_name_prefix_and_glob(model):
    q = rl.quantize(model, rl.QuantConfig(bits=8, skip=("lm_head", "model.layers.1", "*.mlp.down_proj")))
    kinds = {n: type(m).__name__ for n, m in q.named_modules() if isinstance(m, (torch.nn.Linear, QuantLinear))}
    assert kinds["lm_head"] == "Linear" and q.lm_head.weight is q.model.embed_tokens.weight  # the tie stays
    assert kinds["model.layers.0.mlp.down_proj"] == "Linear" and kinds["model.layers.0.mlp.up_proj"] == "QuantLinear"
    assert all(k == "Linear" for n, k in kinds.items() if n.startswith("model.layers.1."))


def test_an_untied_head_is_quantized_and_the_embedding_stays_float():
    q = rl.quantize(tiny(tied=False), rl.QuantConfig(bits=8))
    assert isinstance(q.lm_head, QuantLinear) and type(q.model.embed_tokens) is torch.nn.Embedding


def test_dynamic_per_tensor_is_torch_ao_exactly(model):
    q = rl.quantize(model, rl.QuantConfig(mode="dynamic", activations="per_tensor", skip=("*.mlp.down_proj",)))
    assert type(q.model.layers[0].mlp.down_proj) is torch.nn.Linear and api.is_dynamic_linear(q.lm_head)
    ref = tiny()
    names = [n for n, m in ref.named_modules() if type(m) is torch.nn.Linear and not n.endswith("down_proj")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(ref, {n: per_channel_dynamic_qconfig for n in names}, dtype=torch.qint8, inplace=True)
    assert torch.equal(logits(q), logits(ref))


def test_dynamic_default_is_every_linear_with_per_token_activations(model):
    q = rl.quantize(model, rl.QuantConfig(mode="dynamic"))
    cfg = getattr(q, api.ATTR)
    assert cfg.skip == () and cfg.activations == "per_token"
    linears = [m for m in q.modules() if api.is_dynamic_linear(m)]
    assert len(linears) == 2 * 7 + 1 and all(isinstance(m, api.TokenDynamicLinear) for m in linears)


def _dynamic_pair(seed: int = 0, bias: bool = True):
    """A float Linear and its per-token and per-tensor (torch.ao) dynamic INT8 copies."""
    torch.manual_seed(seed)
    lin = torch.nn.Linear(64, 40, bias=bias)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao = quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear: per_channel_dynamic_qconfig},
                              dtype=torch.qint8)[0]
    return lin, api.TokenDynamicLinear.from_dynamic(ao, lin.bias), ao


@pytest.mark.parametrize("bias", [True, False])
def test_per_token_is_torch_ao_on_one_token(bias):
    _, tok_lin, ao = _dynamic_pair(bias=bias)
    x = torch.randn(1, 1, 64)
    assert torch.equal(tok_lin(x), ao(x))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 999), row=st.integers(0, 7), gain=st.sampled_from([1e-3, 30.0, 1e3]))
def test_a_loud_token_leaves_the_other_tokens_alone(seed, row, gain):
    """Per token, one row scaled by `gain` (an attention sink, a silent pad) changes the other
    rows' outputs by rounding only, and its own output scales with it; per tensor, the other
    rows are crushed when a row is loud."""
    lin, tok_lin, ao = _dynamic_pair(seed)
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(seed))
    loud = x.clone()
    loud[row] *= gain
    others = [i for i in range(8) if i != row]
    with torch.no_grad():
        exact, b = lin(x), lin.bias
        err = lambda y, ref: (y - ref)[others].abs().max().item()  # noqa: E731
        assert err(tok_lin(loud), exact) < 2 * err(tok_lin(x), exact) + 1e-3
        own = (tok_lin(loud)[row] - b) / gain  # the loud row, brought back to the scale of x
        assert torch.allclose(own, (tok_lin(x)[row] - b), rtol=1e-3, atol=1e-3 * (lin(x)[row] - b).abs().max().item())
        if gain == 1e3:
            assert err(ao(loud), exact) > 10 * err(tok_lin(loud), exact)


def test_per_token_error_is_bounded_by_each_rows_own_range():
    """|y - y_float| per row stays within the INT8 grid of that row: about max|x_row| / 63 (7-bit
    activations, reduce_range) times the weight's row sums, plus the weight's own rounding."""
    lin, tok_lin, _ = _dynamic_pair(3, bias=False)
    x = torch.randn(16, 64) * torch.logspace(-3, 3, 16).unsqueeze(1)  # rows over six orders of magnitude
    with torch.no_grad():
        err = (tok_lin(x) - lin(x)).abs().amax(-1)
        w = lin.weight
        bound = x.abs().amax(-1) * (w.abs().sum(-1).max() / 63 + (w.abs().amax(-1) / 127 * 64).max())
    assert (err <= bound).all()


@pytest.mark.parametrize("cfg, calib, error, message", [
    (dict(mode="static"), None, ValueError, "mode='static' needs calibration data"),
    (dict(mode="static"), [], ValueError, "calib is empty"),
    (dict(mode="static"), 3, ValueError, "calib must be a list of input batches, got int"),
    (dict(mode="gptq", bits=4), None, ValueError, "mode='gptq' needs calibration data"),
    (dict(mode="qat"), None, ValueError, "mode='qat' runs in two steps"),
    (dict(granularity="per_group", group_size=48), None, ValueError,
     "group_size=48 does not divide in_features=64 of layer 'model.layers.0.self_attn.q_proj'"),
    (dict(skip=("lm_heads",)), None, ValueError, r"skip has \['lm_heads'\], matching no module"),
    (dict(mode="fp16", skip=("lm_head",)), None, ValueError, "not supported by mode='fp16'"),
    (dict(mode="dynamic", granularity="per_group", group_size=32), None, ValueError, "per_group is a weight_only"),
    (dict(mode="dynamic", symmetric=False), None, ValueError, "use symmetric=True"),
    (dict(observer="mse"), None, NotImplementedError, "observer='mse'"),
    (dict(mode="static", granularity="per_group", group_size=32), [IDS], ValueError, "not supported by mode='static'"),
])
def test_quantize_names_the_problem(model, cfg, calib, error, message):
    with pytest.raises(error, match=message):
        rl.quantize(model, rl.QuantConfig(**cfg), calib=calib)


def test_qat_runs_through_quantize_in_two_steps(model):
    cfg = rl.QuantConfig(bits=4, mode="qat", granularity="per_group", group_size=32)
    prepared = rl.quantize(model, cfg, step="prepare")
    converted = rl.quantize(prepared, None, step="convert")  # the scheme it was prepared with
    assert isinstance(converted.model.layers[0].mlp.up_proj, QuantLinear)
    with torch.no_grad():
        assert torch.allclose(converted(IDS).logits, prepared(IDS).logits, atol=1e-5)
    with pytest.raises(ValueError, match="only for mode='qat'"):
        rl.quantize(model, rl.QuantConfig(bits=8), step="prepare")


def test_quantize_checks_its_arguments(model):
    with pytest.raises(ValueError, match="cfg must be a ragcomp_lab.QuantConfig, got dict"):
        rl.quantize(model, {"bits": 4})
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        rl.quantize("teacher", rl.QuantConfig())


@pytest.mark.parametrize("kwargs, message", [
    (dict(bits=1), "bits=1"), (dict(mode="int4"), "mode='int4'"), (dict(observer="max"), "observer='max'"),
    (dict(skip="lm_head"), "skip='lm_head'"), (dict(scale_dtype="fp8"), "scale_dtype='fp8'"),
    (dict(mode="dynamic", activations="per_channel"), "activations='per_channel' is not supported: use one of "
                                                     "per_token, per_tensor"),
    (dict(mode="static", activations="per_token"), "mode='static' fixes them by calibration"),
    (dict(activations="per_tensor"), "mode='weight_only' keeps float activations"),
])
def test_quant_config_rejects_unsupported_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rl.QuantConfig(**kwargs)


# ---- save / load ---------------------------------------------------------------------------

FORMATS = [None, dict(mode="fp16"), dict(mode="bf16"), dict(mode="dynamic"),
           dict(mode="dynamic", granularity="per_tensor", skip=("lm_head",)),
           dict(mode="dynamic", activations="per_tensor"), dict(bits=8, symmetric=False)]
FORMATS += [dict(bits=b, granularity=g, group_size=gs, symmetric=s) for b in (8, 4, 3, 2)
            for g, gs in (("per_channel", None), ("per_group", 32)) for s in (True, False) if (b, s) != (8, False)]
FORMATS += [dict(bits=4, granularity="per_tensor", scale_dtype="float32")]


@pytest.mark.parametrize("cfg", FORMATS, ids=str)
def test_save_load_gives_identical_outputs(model, cfg, tmp_path):
    m = model if cfg is None else rl.quantize(model, rl.QuantConfig(**cfg))
    path = rl.save(m, tmp_path / "m")
    back = rl.load(path)
    assert torch.equal(logits(back), logits(m))
    assert [type(x) for x in back.modules()] == [type(x) for x in m.modules()]  # per-token layers stay per token
    assert getattr(back, api.ATTR, None) == getattr(m, api.ATTR, None)
    assert sorted(os.listdir(path)) == sorted([serialize.WEIGHTS, serialize.META])
    keys = load_file(path / serialize.WEIGHTS).keys()
    assert "lm_head.weight" not in keys or "model.embed_tokens.weight" not in keys  # tied: saved once


def test_a_dynamic_file_from_before_per_token_loads_per_tensor(model, tmp_path):
    m = rl.quantize(model, rl.QuantConfig(mode="dynamic", activations="per_tensor"))
    path = rl.save(m, tmp_path / "m")
    meta = json.loads((path / serialize.META).read_text())
    for spec in meta["modules"].values():
        del spec["activations"]
    del meta["quant_config"]["activations"]
    (path / serialize.META).write_text(json.dumps(meta))
    back = rl.load(path)
    assert not any(isinstance(x, api.TokenDynamicLinear) for x in back.modules())
    assert torch.equal(logits(back), logits(m))


def test_untied_model_round_trips(tmp_path):
    m = rl.quantize(tiny(tied=False, seed=2), rl.QuantConfig(bits=4, granularity="per_group", group_size=16))
    assert torch.equal(logits(rl.load(rl.save(m, tmp_path / "m"))), logits(m))


def test_save_stores_codes_not_floats(model, tmp_path):
    q = rl.quantize(model, rl.QuantConfig(bits=4, granularity="per_group", group_size=32))
    t = load_file(rl.save(q, tmp_path / "m") / serialize.WEIGHTS)
    assert t["lm_head.qweight"].dtype == torch.uint8 and t["lm_head.qweight"].shape == (256, 32)
    assert t["lm_head.scale"].dtype == torch.float16 and t["lm_head.scale"].shape == (256, 2)
    meta = json.loads((tmp_path / "m" / serialize.META).read_text())
    assert meta["modules"]["model.embed_tokens"] == {"kind": "QuantEmbedding", "head": "lm_head", "padding_idx": None,
                                                     "dtype": "float32"}


def test_save_keeps_no_path_of_the_machine_it_ran_on(model, tmp_path):
    q = rl.quantize(model, rl.QuantConfig(bits=8))
    q.config._name_or_path = str(tmp_path / "where-it-was-loaded-from")
    saved = rl.save(q, tmp_path / "m")
    assert "where-it-was-loaded-from" not in (saved / serialize.META).read_text()
    x = torch.randint(0, 256, (1, 5))
    torch.testing.assert_close(rl.load(saved)(x).logits, q(x).logits)


def test_save_is_atomic(model, tmp_path, monkeypatch):
    path = rl.save(model, tmp_path / "m")
    q = rl.quantize(model, rl.QuantConfig(bits=4))

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(serialize, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        rl.save(q, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["m"]  # no temporary folder left behind
    assert torch.equal(logits(rl.load(path)), logits(model))  # the earlier save is intact
    rl.save(q, path)  # a successful save replaces it
    assert torch.equal(logits(rl.load(path)), logits(q)) and os.listdir(tmp_path) == ["m"]


def test_save_and_load_name_bad_paths(model, tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(ValueError, match="exists and is not a saved model"):
        rl.save(model, tmp_path / "notes")
    with pytest.raises(FileNotFoundError, match="no saved model"):
        rl.load(tmp_path / "notes")
    with pytest.raises(ValueError, match="needs a Hugging Face model"):
        rl.save(torch.nn.Linear(2, 2), tmp_path / "x")


def test_teacher_files_shrink_with_the_bits(teacher_and_tok, tmp_path):
    """Files on disk, scales, zero-points and quant.json included, against the FP32 tensor bytes
    (tied weights once; an FP32 file adds only its header to these)."""
    from ragcomp_lab.checkpoint import unique_tensors

    teacher, _ = teacher_and_tok
    fp32 = sum(t.nbytes for t in unique_tensors(teacher.state_dict()).values())
    sizes = {}
    for name, cfg in [("int8", dict(bits=8)), ("int4", dict(bits=4, granularity="per_group", group_size=64))]:
        path = rl.save(rl.quantize(teacher, rl.QuantConfig(**cfg)), tmp_path / name)
        sizes[name] = fp32 / sum(os.path.getsize(path / f) for f in os.listdir(path))
    assert sizes["int8"] >= 3.9 and sizes["int4"] >= 6.5  # measured: 3.98x and 7.51x
