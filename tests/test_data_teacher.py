"""The teacher's distillation data: shipped answers regenerate exactly; top-k soft targets."""
import pytest
import torch

from ragcomp_lab import data
from ragcomp_lab.data import teacher as td
from ragcomp_lab.data.encode import IGNORE, collate, encode_pair


def test_encode_pair_masks_the_prompt_and_ends_with_eos(teacher_and_tok):
    _, tok = teacher_and_tok
    ids, labels = encode_pair(tok, "Question: where?\nAnswer:", "Darnmoor")
    n_prompt = len(tok("Question: where?\nAnswer:", add_special_tokens=False).input_ids)
    assert labels[:n_prompt] == [IGNORE] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tok.eos_token_id and tok.decode(ids[n_prompt:-1]) == " Darnmoor"
    batch = collate([(ids, labels), (ids[:5], labels[:5])], tok.pad_token_id)
    assert batch["input_ids"].shape == (2, len(ids)) and batch["attention_mask"][1].sum() == 5
    assert (batch["labels"][1, 5:] == IGNORE).all()


def test_shipped_teacher_answers_cover_every_row_and_regenerate_exactly(teacher_and_tok):
    teacher, tok = teacher_and_tok
    meta, answers = td.read_answers()
    splits = data.rag_splits(seed=meta["seed"])
    for name, split in splits.items():
        assert set(split["id"]) <= set(answers), name
    first = splits[meta["order"][0]].select(range(meta["batch_size"]))  # the first batch, exactly as generated
    again = td.teacher_answers(teacher, tok, first, batch_size=meta["batch_size"], progress=False)
    assert again == [answers[i] for i in first["id"]]


def test_the_shipped_top32_cache_is_the_teachers_on_the_train_split(teacher_and_tok):
    teacher, tok = teacher_and_tok
    meta = td.topk_meta()
    train = data.rag_splits(seed=meta["seed"])["train"]
    assert meta["testbed"] == data.TESTBED and meta["split"] == "train" and meta["k"] == 32 and meta["seconds"] > 0
    assert td.read_answers()[0]["testbed"] == data.TESTBED and td.read_answers()[0]["seconds"] > 0
    rows = td.load_topk(td.SHIPPED_TOPK)
    assert len(rows) == len(train)
    again = td.topk_logprobs(teacher, tok, train["prompt"][:2], train["answer"][:2], k=32)
    for a, b in zip(again, rows[:2]):
        assert torch.equal(a["targets"], b["targets"])
        torch.testing.assert_close(a["logprobs"], b["logprobs"], rtol=1e-4, atol=1e-4)


def test_topk_logprobs_are_the_teachers_distribution(teacher_and_tok):
    teacher, tok = teacher_and_tok
    prompt, answer = "Context: Darnmoor is a town.\nQuestion: Which town?\nAnswer:", "Darnmoor"
    (row,) = td.topk_logprobs(teacher, tok, [prompt], [answer], k=8)
    ids, labels = encode_pair(tok, prompt, answer)
    n = sum(l != IGNORE for l in labels)
    assert row["ids"].shape == row["logprobs"].shape == (n, 8) and row["targets"].tolist() == labels[-n:]
    with torch.no_grad():
        full = torch.log_softmax(teacher(torch.tensor([ids])).logits[0, -n - 1:-1], -1)
    torch.testing.assert_close(row["logprobs"], full.topk(8, -1).values, rtol=1e-4, atol=1e-4)
    assert (row["logprobs"].exp().sum(-1) <= 1 + 1e-5).all()  # the rest bucket is what is left
    assert (row["logprobs"][:, :-1] >= row["logprobs"][:, 1:]).all()


@pytest.mark.parametrize("kwargs, message", [(dict(k=0), "k=0"), (dict(k=10**6), "k=1000000"),
                                              (dict(answers=[]), "as many answers as prompts")])
def test_topk_bad_arguments(teacher_and_tok, kwargs, message):
    teacher, tok = teacher_and_tok
    args = dict(prompts=["a"], answers=["b"], k=4) | kwargs
    with pytest.raises(ValueError, match=message):
        td.topk_logprobs(teacher, tok, **args)


def test_public_names():
    assert data.teacher_answers is td.teacher_answers and data.topk_logprobs is td.topk_logprobs


def test_teacher_answers_refuse_an_empty_dataset(teacher_and_tok):
    teacher, tok = teacher_and_tok
    with pytest.raises(ValueError, match="empty"):
        td.teacher_answers(teacher, tok, data.rag_splits()["test"].select([]))


def test_topk_cache_round_trips_through_safetensors(tmp_path):
    g = torch.Generator().manual_seed(0)
    rows = [{"ids": torch.randint(0, 100, (n, 4), generator=g, dtype=torch.int32),
             "logprobs": -torch.rand(n, 4, generator=g), "targets": torch.randint(0, 100, (n,), generator=g)}
            for n in (3, 1, 5)]
    back = td.load_topk(td.save_topk(tmp_path / "topk.safetensors", rows))
    assert len(back) == 3 and not (tmp_path / "topk.tmp").exists()
    for a, b in zip(rows, back):
        for k in a:
            assert torch.equal(a[k], b[k])
    with pytest.raises(ValueError, match="no rows"):
        td.save_topk(tmp_path / "empty.safetensors", [])
