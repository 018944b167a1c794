import json
import statistics

import pytest
import torch

from ragcomp_lab import bench, benchmarks


def test_latency_is_the_median_of_the_timed_runs_and_records_threads():
    calls = []
    lat = bench.latency(lambda: calls.append(1), warmup=3, repeat=5)
    assert len(calls) == 8 and len(lat.times) == 5
    assert lat.median == statistics.median(lat.times) and lat.threads == torch.get_num_threads()
    assert "median of 5" in str(lat)


def test_compare_interleaves_the_contenders():
    order = []
    bench.compare({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, warmup=0, repeat=3)
    assert order == ["a", "b"] * 3


def test_size_bytes_counts_tied_weights_once_and_matches_the_file(tmp_path):
    from safetensors.torch import save_file

    m = torch.nn.Sequential(torch.nn.Embedding(100, 16), torch.nn.Linear(16, 100, bias=False))
    untied = bench.size_bytes(m)
    m[1].weight = m[0].weight  # tie, as language models tie the embedding and the head
    assert bench.size_bytes(m) < untied - 100 * 16 * 4 + 200
    save_file({"w": m[0].weight.detach()}, tmp_path / "w.safetensors")
    assert bench.size_bytes({"w": m[0].weight.detach()}) == (tmp_path / "w.safetensors").stat().st_size


@pytest.mark.parametrize("kwargs, message", [(dict(warmup=-1), "warmup=-1"), (dict(repeat=0), "repeat=0")])
def test_bad_counts_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bench.latency(lambda: None, **kwargs)
    with pytest.raises(ValueError, match="nn.Module or a dict of tensors"):
        bench.size_bytes([1, 2])


def test_bench_json_has_one_row_per_floor(tmp_path, monkeypatch, capsys):
    fake = [{"name": "x vs y", "value": 1.2, "floor": 1.0, "met": True, "ours_ms": 1.0, "reference_ms": 1.2}]
    monkeypatch.setattr(benchmarks, "core_math", lambda: fake)
    monkeypatch.setattr(benchmarks, "distill_step", lambda: [])
    missed = {"name": "a floor not measured", "value": None, "floor": 0.85, "met": False, "at_most": False,
              "note": "not measured: why"}
    monkeypatch.setattr(benchmarks, "model_floors", lambda: [missed])
    assert benchmarks.main(str(tmp_path / "b" / "bench.json")) == 0
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert rows == [{"name": "x vs y", "value": 1.2, "floor": 1.0, "met": True},
                    {"name": "a floor not measured", "value": None, "floor": 0.85, "met": False}]
    out = capsys.readouterr().out
    assert "x vs y" in out and "n/a   (floor 0.85: NOT MET)  not measured: why" in out


def test_model_floor_rows_hold_minimums_maximums_and_misses():
    from ragcomp_lab.bench_models import row

    assert row("x", 4.2, 4.0)["met"] and not row("x", 3.9, 4.0)["met"]
    assert row("loss", 0.5, 1.0, at_most=True)["met"] and not row("loss", 1.5, 1.0, at_most=True)["met"]
    assert row("n", None, 0.85) == {"name": "n", "value": None, "floor": 0.85, "met": False, "at_most": False,
                                     "note": ""}
    assert not row("speed with a condition", 2.0, 1.8, met=False)["met"]  # e.g. top-1 agreement too low


def test_non_embedding_bytes_leave_out_embedding_and_head():
    from transformers import LlamaConfig, LlamaForCausalLM

    import ragcomp_lab as rl
    from ragcomp_lab.bench_models import _non_embedding_bytes

    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=32, tie_word_embeddings=True)
    m = LlamaForCausalLM(cfg).eval()
    linear = sum(p.numel() for n, p in m.named_parameters() if "proj" in n)
    norms = sum(p.numel() for n, p in m.named_parameters() if "norm" in n)
    assert _non_embedding_bytes(m) == 4 * (linear + norms)
    q8 = rl.quantize(m, rl.QuantConfig(bits=8, mode="weight_only"))
    assert _non_embedding_bytes(q8) < _non_embedding_bytes(m) / 3.5


def _tiny_llama_and_tok():
    """A 1-layer Llama and a tokenizer stub that always gives a 3-token prompt: generate() in milliseconds."""
    from transformers import LlamaConfig, LlamaForCausalLM

    class Tok:
        pad_token_id = 0

        def __call__(self, text, **kw):
            return {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}

    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=8)
    return LlamaForCausalLM(cfg).eval(), Tok


def test_decode_costs_split_the_prompt_forward_from_the_per_token_decoding(monkeypatch):
    from ragcomp_lab import bench_models
    from ragcomp_lab.bench import Latency

    model, Tok = _tiny_llama_and_tok()
    lengths = []  # the number of tokens each timed call generated
    real = bench_models._decode

    def counting(m, batch, tok, new_tokens=32):
        run = real(m, batch, tok, new_tokens)
        return lambda: lengths.append(run().shape[1] - 3)
    monkeypatch.setattr(bench_models, "_decode", counting)
    out = bench_models.decode_costs({"a": model}, Tok(), "p", new_tokens=4, warmup=0, repeat=1)
    assert sorted(lengths) == [1, 5]  # one token (the prompt's forward) and 1 + 4
    a = out["a"]
    assert a["prompt_tokens"] == 3 and a["total_ms"] > 0 and a["prefill_ms"] > 0  # no timing order: noise

    n = torch.get_num_threads()
    fixed = {("a", n, "prefill"): 0.2, ("a", n, "total"): 1.0, ("b", n, "prefill"): 0.1, ("b", n, "total"): 0.3}
    monkeypatch.setattr(bench_models, "compare",
                        lambda fns, **kw: {k: Latency(fixed[k], [fixed[k]], 2) for k in fns})
    out = bench_models.decode_costs({"a": model, "b": model}, Tok(), "p", new_tokens=4)
    assert out["a"]["ms_per_token"] == pytest.approx(200.0) and out["b"]["ms_per_token"] == pytest.approx(50.0)
    assert out["a"]["prefill_ms"] == pytest.approx(200.0) and out["b"]["total_ms"] == pytest.approx(300.0)
    assert out["a"]["threads"] == n and out["a"]["ms_per_token_by_threads"] == {n: pytest.approx(200.0)}
    with pytest.raises(ValueError, match="new_tokens=0"):
        bench_models.decode_costs({"a": model}, Tok(), "p", new_tokens=0)


def test_decode_costs_report_each_model_on_its_fastest_thread_count(monkeypatch):
    """Two thread counts in one interleaved run: each model's row is the count that decodes it
    fastest, every count's cost is kept, the generate calls really ran on that many threads, and
    torch's own count is restored afterwards."""
    from ragcomp_lab import bench_models
    from ragcomp_lab.bench import Latency

    model, Tok = _tiny_llama_and_tok()
    seen = set()
    real = bench_models._decode
    monkeypatch.setattr(bench_models, "_decode", lambda m, b, t, k: lambda: (seen.add(torch.get_num_threads()),
                                                                             real(m, b, t, k)())[1])
    before = torch.get_num_threads()
    out = bench_models.decode_costs({"a": model}, Tok(), "p", new_tokens=2, warmup=0, repeat=1, threads=(1, 2))
    assert seen == {1, 2} and torch.get_num_threads() == before
    assert set(out["a"]["ms_per_token_by_threads"]) == {1, 2}

    # a: faster on 1 thread, b: faster on 2 (seconds for prefill and total)
    fixed = {("a", 1): (0.1, 0.5), ("a", 2): (0.1, 0.9), ("b", 1): (0.1, 0.5), ("b", 2): (0.1, 0.3)}
    monkeypatch.setattr(bench_models, "compare", lambda fns, **kw: {
        k: Latency(fixed[k[:2]][k[2] == "total"], [0], 2) for k in fns})
    out = bench_models.decode_costs({"a": model, "b": model}, Tok(), "p", new_tokens=4, threads=(1, 2))
    assert out["a"]["threads"] == 1 and out["a"]["ms_per_token"] == pytest.approx(100.0)
    assert out["b"]["threads"] == 2 and out["b"]["ms_per_token"] == pytest.approx(50.0)
    assert out["a"]["ms_per_token_by_threads"] == {1: pytest.approx(100.0), 2: pytest.approx(200.0)}
    note = bench_models._speed_note(out["a"], out["b"])
    assert note.startswith("100.0 vs 50.0 ms per token") and "(1 and 2; on 1/2 threads 100.0/200.0 vs 100.0/50.0" in note
    for bad in ((), (0,), (1, True)):
        with pytest.raises(ValueError, match="thread"):
            bench_models.decode_costs({"a": model}, Tok(), "p", threads=bad)


def test_error_compensation_row_compares_gptq_with_round_to_nearest_at_the_same_bits(make_bed, monkeypatch):
    """On the 2-layer stand-in teacher: the row's value is the gap between the two perplexity
    increases its note reports, met exactly when GPTQ's perplexity is the lower one."""
    import re

    from ragcomp_lab import bench_models

    bed = make_bed(4, 6)
    monkeypatch.setattr(bench_models, "GPTQ_CALIB", 2)
    [r] = bench_models.error_compensation(bed.teacher, bed.tok, bed.test)
    fp32, rtn, gptq = (float(x) for x in re.findall(r"(?:FP32|round-to-nearest|GPTQ) ([\d.]+)", r["note"]))
    lost = lambda p: 100 * (p / fp32 - 1)  # noqa: E731
    assert r["value"] == pytest.approx(lost(rtn) - lost(gptq), abs=1e-3)
    assert r["met"] == (gptq < rtn) and rtn != gptq  # GPTQ really chose other codes


def test_shipped_student_rows_are_not_met_until_a_student_ships_then_measured(make_bed, tmp_path):
    """Without a shipped student, four rows say why they are not measured; with one (a 1-layer stand-in
    saved as make student saves it), F1 shares and side-by-side decoding ratios against the teacher."""
    from ragcomp_lab import bench_models, heads, models

    bed = make_bed(4, 6)
    missing = bench_models.shipped_student(bed.teacher, bed.tok, bed.test, 0.5, folder=tmp_path / "none")
    assert len(missing) == 4 and all(r["value"] is None and not r["met"] and "make student" in r["note"]
                                     for r in missing)
    student = models.make_student(bed.teacher, keep_layers=[1])
    heads.use_prompt_head(student, heads.general_ids(bed.tok))
    models.save_student(student, tmp_path / "student")
    rows = bench_models.shipped_student(bed.teacher, bed.tok, bed.test, 0.5, folder=tmp_path / "student")
    assert [r["name"] for r in rows] == [r["name"] for r in missing]
    assert all(r["value"] is not None and r["value"] >= 0 for r in rows)
    assert [r["floor"] for r in rows] == [0.9, 4.0, 0.85, 8.0] and all("bounds FP32" in r["note"] for r in rows[1::2])
