import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ragcomp_lab.quant import packing

BITS = range(2, 9)


@settings(max_examples=60)
@given(bits=st.integers(2, 8), n=st.integers(0, 70), lead=st.lists(st.integers(1, 3), max_size=2),
       seed=st.integers(0, 2**31 - 1))
def test_round_trip_is_exact_for_every_width_and_length(bits, n, lead, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2**bits, (*lead, n), generator=g)
    packed = packing.pack(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (*lead, packing.packed_len(n, bits))
    out = packing.unpack(packed, bits, n)
    assert out.dtype == torch.uint8 and torch.equal(out, codes.to(torch.uint8))


@pytest.mark.parametrize("bits, codes_per_bytes", [(2, (4, 1)), (3, (8, 3)), (4, (2, 1)), (5, (8, 5)),
                                                   (6, (4, 3)), (7, (8, 7)), (8, (1, 1))])
def test_storage_is_dense(bits, codes_per_bytes):
    assert packing.chunk(bits) == codes_per_bytes
    assert packing.packed_len(576, bits) * 8 == 576 * bits  # no wasted bit on a whole row
    assert packing.packed_len(1, bits) == codes_per_bytes[1]  # a partial chunk is padded to a whole one


def test_int4_puts_two_codes_in_a_byte_planar():
    # row of 4 codes -> planes [c0, c1] and [c2, c3]; byte j = plane0[j] | plane1[j] << 4
    packed = packing.pack(torch.tensor([[1, 2, 3, 15]]), 4)
    assert packed.tolist() == [[1 | 3 << 4, 2 | 15 << 4]]
    assert packing.pack(torch.tensor([1, 2, 3, 0]), 2).tolist() == [1 | 2 << 2 | 3 << 4]


def test_int3_packs_eight_codes_into_three_bytes():
    codes = torch.arange(8)
    word = sum(int(c) << (3 * i) for i, c in enumerate(codes))
    assert packing.pack(codes, 3).tolist() == [word & 255, word >> 8 & 255, word >> 16]


def test_extreme_codes_survive():
    for bits in BITS:
        codes = torch.tensor([[0, 2**bits - 1] * 9])
        assert torch.equal(packing.unpack(packing.pack(codes, bits), bits, 18), codes.to(torch.uint8))


@pytest.mark.parametrize("codes, bits, message", [
    (torch.tensor([0, 16]), 4, r"\[0, 16\], outside \[0, 15\]"),
    (torch.tensor([-1, 3]), 2, r"shift signed codes by 2"),
    (torch.tensor([0.0, 1.0]), 4, "integer tensor"),
    (torch.tensor(3), 4, "at least one dim"),
    (torch.tensor([1, 2]), 1, "bits=1"),
    (torch.tensor([1, 2]), 9, "bits=9"),
])
def test_pack_names_bad_input(codes, bits, message):
    with pytest.raises(ValueError, match=message):
        packing.pack(codes, bits)


def test_unpack_needs_the_length_that_fits():
    packed = packing.pack(torch.zeros(2, 10, dtype=torch.long), 4)  # 5 bytes a row
    assert packing.unpack(packed, 4, 9).shape == (2, 9)  # 9 codes also take 5 bytes
    with pytest.raises(ValueError, match="n=12 codes of 4 bits take 6 bytes a row, but packed has 5"):
        packing.unpack(packed, 4, 12)
    with pytest.raises(ValueError, match="uint8"):
        packing.unpack(packed.to(torch.int8), 4, 10)
