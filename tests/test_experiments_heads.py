"""The head designs on the stand-in teacher: the per-prompt head covers extractive answers anywhere,
the fixed head misses what its pool never used, the trimmed heads raise the bound, and every design
is timed against the teacher."""
import statistics

import pytest

import ragcomp_lab as rl
from ragcomp_lab import experiments_heads as eh
from ragcomp_lab import heads
from ragcomp_lab.data.encode import answer_text

CHEAP = {"repeat": 3, "warmup": 0, "new_tokens": 4, "threads": 1}
INVENTED = {"prompt": "Context: The Vandrelisk Quoxmobile carries 412 passengers.\n"
                      "Question: Which vehicle carries 412 passengers?\nAnswer:",
            "answer": "Vandrelisk Quoxmobile", "kind": "single_fact"}
REFUSAL = {"prompt": "Context: Nothing here.\nQuestion: Who built it?\nAnswer:", "answer": "The context does not say.",
           "kind": "unanswerable"}


def _extractive(split, n):
    """The first n rows whose answer occurs, after a space, in their prompt."""
    picked = [r for r in split if answer_text(r["answer"]) in r["prompt"]][:n]
    assert len(picked) == n
    return _columns(picked)


def _columns(rows):
    return {k: [r[k] for r in rows] for k in ("prompt", "answer", "kind")}


@pytest.fixture(scope="module")
def run(make_bed):
    bed = make_bed(2, 1)
    real = rl.data.rag_splits(seed=0)
    splits = {"test": _extractive(real["test"], 3), "test_new_wording": _extractive(real["test_new_wording"], 2),
              "test_new_domain": _columns([INVENTED, REFUSAL])}
    pool = real["train"].select(range(3))
    rows, info = eh.head_designs(bed, n_layers=1, splits=splits, pool=pool, timing=CHEAP)
    return bed, splits, pool, {r["design"]: r for r in rows}, info


def test_one_row_per_design_with_its_measurements(run):
    bed, splits, _, rows, info = run
    assert list(rows) == list(eh.DESIGNS)
    for row in rows.values():
        for key in ("head_ids", "coverage_test", "coverage_test_new_wording", "coverage_test_new_domain",
                    "weights_per_token", "decode_speedup_bound", "decode_ms_per_token", "decode_speedup"):
            assert key in row, key
        assert row["n_layers"] == 1
    assert info["layers"] == [1] and info["threads"] == [1] and info["pool_rows"] == 3
    lengths = [len(bed.tok(p, add_special_tokens=False)["input_ids"]) for p in splits["test"]["prompt"]]
    assert info["prompt_tokens"] == statistics.median(lengths) and info["prompt"] in splits["test"]["prompt"]
    assert set(info["measured"]) >= {"head_ids", "coverage", "decode_speedup_bound", "decode_speedup"}


def test_head_sizes_are_the_vocabulary_the_fixed_set_and_the_prompts_own_ids(run):
    bed, splits, _, rows, info = run
    general = set(heads.general_ids(bed.tok))
    assert rows["tied"]["head_ids"] == bed.teacher.config.vocab_size == 49152
    assert rows["fixed"]["head_ids"] == info["fixed_ids"] and info["general_ids"] == len(general)
    assert rows["per_prompt"]["head_ids"] == len(general | set(heads.token_ids(bed.tok, [info["prompt"]])))
    every = [p for s in splits.values() for p in s["prompt"]]
    assert rows["per_prompt"]["head_ids_mean_held_out"] == pytest.approx(
        statistics.mean(len(general | set(heads.token_ids(bed.tok, [p]))) for p in every))


def test_the_per_prompt_head_covers_extractive_answers_and_the_fixed_one_misses_a_new_domain(run):
    bed, _, pool, rows, _ = run
    fixed = set(heads.general_ids(bed.tok)) | set(heads.token_ids(
        bed.tok, list(pool["prompt"]) + [answer_text(a) for a in pool["answer"]]))
    assert not set(heads.token_ids(bed.tok, [answer_text(INVENTED["answer"])])) <= fixed  # the constructed row
    for split in ("test", "test_new_wording", "test_new_domain"):
        assert rows["per_prompt"][f"coverage_{split}"] == 1.0
        assert rows["tied"][f"coverage_{split}"] == 1.0
    assert rows["fixed"]["coverage_test_new_domain"] == 0.5  # the invented answer missed, the refusal kept


def test_trimmed_heads_raise_the_bound(run):
    *_, rows, _ = run
    for name in ("fixed", "per_prompt"):
        assert rows[name]["decode_speedup_bound"] > rows["tied"]["decode_speedup_bound"] > 1
        assert rows[name]["weights_per_token"] < rows["tied"]["weights_per_token"]


def test_trimmed_heads_drop_exactly_their_missing_rows_from_the_bound(run):
    bed, _, _, rows, _ = run
    hidden = bed.teacher.config.hidden_size
    for name in ("fixed", "per_prompt"):
        dropped = rows["tied"]["head_ids"] - rows[name]["head_ids"]
        assert rows["tied"]["weights_per_token"] - rows[name]["weights_per_token"] == dropped * hidden


def test_every_design_is_timed_against_the_teacher(run):
    *_, rows, _ = run
    for row in rows.values():
        assert row["decode_ms_per_token"] > 0 and row["teacher_decode_ms_per_token"] > 0
        assert row["decode_speedup"] == pytest.approx(row["teacher_decode_ms_per_token"] / row["decode_ms_per_token"])
        assert row["decode_speedup"] > 0 and row["decode_threads"] == 1


def test_missing_splits_and_an_empty_pool_are_refused(make_bed):
    bed = make_bed(2, 1)
    pool = {"prompt": ["Context: x\nQuestion: y\nAnswer:"], "answer": ["x"]}
    with pytest.raises(ValueError, match="test_new_domain"):
        eh.head_designs(bed, n_layers=1, splits={"test": {}, "test_new_wording": {}}, pool=pool)
    full = {name: _columns([REFUSAL]) for name in ("test", "test_new_wording", "test_new_domain")}
    with pytest.raises(ValueError, match="pool has no rows"):
        eh.head_designs(bed, n_layers=1, splits=full, pool={"prompt": [], "answer": []})


def test_ragcomp_lab_experiments_heads_runs_head_designs(monkeypatch):
    from ragcomp_lab import experiments

    monkeypatch.setattr(eh, "head_designs", lambda bed: ([{"design": "tied", "bed": bed}], {}))
    assert experiments.EXPERIMENTS["heads"]("the bed") == ([{"design": "tied", "bed": "the bed"}], {})
