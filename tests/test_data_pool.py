import pytest

from ragcomp_lab import data


@pytest.fixture(scope="module")
def pool():
    return data.train_pool(seed=0, extra_seeds=(1, 2))


def test_the_pool_adds_other_test_beds_to_the_train_split(pool):
    base, one, two = data.rag_splits(0), data.rag_splits(1), data.rag_splits(2)
    added = sum(len(s[split]) for s in (one, two) for split in ("train", "validation", "test"))
    assert len(base["train"]) < len(pool) <= len(base["train"]) + added
    assert set(base["train"]["id"]) <= set(pool["id"])
    assert pool.column_names == base["train"].column_names
    assert len(set(pool["id"])) == len(pool)  # rows of different test beds keep distinct ids


def test_no_pooled_row_names_a_held_out_entity(pool):
    base = data.rag_splits(0)
    held = {e for split in ("validation", "test") for es in base[split]["entities"] for e in es}
    assert not any(held.intersection(es) for es in pool["entities"])


@pytest.mark.parametrize("extra, message", [((0, 1), "contains seed=0"), (3, "give a list of integer seeds"),
                                            (("1",), "give a list of integer seeds")])
def test_bad_seeds_are_named(extra, message):
    with pytest.raises(ValueError, match=message):
        data.train_pool(seed=0, extra_seeds=extra)
