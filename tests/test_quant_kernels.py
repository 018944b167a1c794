"""The compiled weight-only decoding kernels (quant/kernels.py) against PyTorch's float matmul of the same weight."""
import pytest
import torch
import torch.nn.functional as F

from ragcomp_lab.quant import kernels
from ragcomp_lab.quant.linear import QuantLinear

pytestmark = pytest.mark.skipif(not kernels.available(), reason="no C++ compiler here: the PyTorch path is tested")


def _layer(out_f=40, in_f=64, bias=True, granularity="per_channel", seed=0):
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(out_f, in_f, generator=g) * 0.05, torch.randn(out_f, generator=g)
    return QuantLinear.from_weight(w, b if bias else None, 8, True, granularity)


def test_it_is_built_with_its_vectorized_path_on_an_avx2_cpu():
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert kernels.vectorized()


@pytest.mark.parametrize("tokens", [1, 2, 5, kernels.MAX_TOKENS])
@pytest.mark.parametrize("in_f", [64, 576, 45])  # 45: not a multiple of the 32-wide vector loop
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("bias", [True, False])
def test_the_int8_kernel_is_the_float_matmul_of_the_dequantized_weight(tokens, in_f, granularity, bias):
    m = _layer(in_f=in_f, bias=bias, granularity=granularity, seed=tokens)
    x = torch.randn(tokens, in_f, generator=torch.Generator().manual_seed(in_f))
    assert kernels.usable(m, x)
    ref = F.linear(x.double(), m.dequantized_weight().double(), None if m.bias is None else m.bias.double())
    out = m(x)
    assert out.dtype == torch.float32 and out.shape == (tokens, 40)
    # only the order of the float additions differs from an exact sum
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, F.linear(x, m.dequantized_weight(), m.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tokens", [1, 3, kernels.MAX_TOKENS])
@pytest.mark.parametrize("in_f,gran", [(64, ("per_tensor", None)), (576, ("per_channel", None)),
                                       (576, ("per_group", 64)), (1536, ("per_group", 32)), (1536, ("per_group", 128)), (576, ("per_group", 48)),
                                       (48, ("per_group", 16)), (45, ("per_channel", None)), (45, ("per_group", 9))])
@pytest.mark.parametrize("symmetric", [True, False])
def test_the_int4_kernel_is_the_float_matmul_of_the_dequantized_weight(tokens, in_f, gran, symmetric):
    # 576 / 64: the two nibble planes of a byte fall in different groups; 48: a group ends inside a 32-byte
    # vector step (the loop finishes the row byte by byte); 45: an odd row, its last byte half padding
    g = torch.Generator().manual_seed(in_f + tokens)
    w, b = torch.randn(40, in_f, generator=g) * 0.05, torch.randn(40, generator=g)
    m = QuantLinear.from_weight(w, b, 4, symmetric, *gran)
    x = torch.randn(tokens, in_f, generator=g)
    assert kernels.usable(m, x)
    ref = F.linear(x.double(), m.dequantized_weight().double(), b.double())
    torch.testing.assert_close(m(x).double(), ref, rtol=1e-5, atol=1e-5)


def test_float32_scales_are_read_as_they_are():
    w = torch.randn(40, 64, generator=torch.Generator().manual_seed(5))
    for bits in (4, 8):
        m = QuantLinear.from_weight(w, bits=bits, scale_dtype="float32")
        x = torch.randn(2, 64)
        torch.testing.assert_close(m(x), F.linear(x, m.dequantized_weight()), rtol=1e-5, atol=1e-5)


def test_it_keeps_the_leading_dimensions_and_is_deterministic():
    m = _layer()
    x = torch.randn(1, 3, 64)
    y = m(x)
    assert y.shape == (1, 3, 40) and torch.equal(y, m(x))
    torch.testing.assert_close(y[0, 1], m(x[0, 1:2])[0], rtol=0, atol=0)  # a row does not depend on the others


def test_many_tokens_and_uncovered_formats_take_the_pytorch_path():
    m = _layer()
    assert not kernels.usable(m, torch.randn(kernels.MAX_TOKENS + 1, 64))  # a prompt: a real GEMM is faster
    assert not kernels.usable(m, torch.randn(1, 64, dtype=torch.float64))
    assert not kernels.usable(m, torch.randn(1, 64, requires_grad=True))  # the kernel has no backward
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 64, generator=g)
    assert not kernels.usable(QuantLinear.from_weight(w, bits=3), torch.randn(1, 64))
    assert not kernels.usable(QuantLinear.from_weight(w, bits=8, symmetric=False), torch.randn(1, 64))
    assert not kernels.usable(QuantLinear.from_weight(w, bits=8, granularity="per_group", group_size=16),
                              torch.randn(1, 64))


def test_gradients_flow_through_the_pytorch_path():
    m = _layer()
    x = torch.randn(1, 64, requires_grad=True)
    m(x).sum().backward()
    torch.testing.assert_close(x.grad[0], m.dequantized_weight().sum(0))


def test_without_the_kernel_the_layer_gives_the_same_outputs(monkeypatch):
    m = _layer(in_f=576)
    x = torch.randn(1, 576)
    fast = m(x)
    monkeypatch.setattr(kernels, "available", lambda: False)
    torch.testing.assert_close(m(x), fast, rtol=1e-5, atol=1e-5)


def test_the_environment_switch_keeps_the_pytorch_path(monkeypatch):
    monkeypatch.setenv(kernels.DISABLE_ENV, "1")
    kernels._module.cache_clear()
    try:
        assert not kernels.available() and not kernels.usable(_layer(), torch.randn(1, 64))
    finally:
        monkeypatch.delenv(kernels.DISABLE_ENV)
        kernels._module.cache_clear()
    assert kernels.available()


def test_bad_input_is_refused_by_the_kernel_not_read_out_of_bounds():
    m = _layer()
    with pytest.raises(RuntimeError, match="K = x.size"):
        kernels.int8_linear(torch.randn(1, 63), m.qweight, m.scale, m.bias)
    with pytest.raises(RuntimeError, match="q must be contiguous int8"):
        kernels.int8_linear(torch.randn(1, 64), m.qweight.to(torch.int16), m.scale, m.bias)
    with pytest.raises(RuntimeError, match="bias must be"):
        kernels.int8_linear(torch.randn(1, 64), m.qweight, m.scale, torch.randn(39))
    m4 = QuantLinear.from_weight(torch.randn(40, 64), bits=4, granularity="per_group", group_size=16)
    with pytest.raises(RuntimeError, match=r"packed must be contiguous uint8 \(N, ceil\(K / 2\)\)"):
        kernels.int4_linear(torch.randn(1, 62), m4.qweight, m4.scale, None, None)
    with pytest.raises(RuntimeError, match="G dividing K"):
        kernels.int4_linear(torch.randn(1, 64), m4.qweight, torch.ones(40, 3), None, None)


@pytest.mark.parametrize("bits", [8, 4])
def test_rows_split_over_threads_give_the_same_output_as_one_thread(bits):
    # 1000 rows: several 64-row chunks per thread; each row is one thread's whole dot product, so the
    # result is bit for bit the same whatever the thread count
    w = torch.randn(1000, 576, generator=torch.Generator().manual_seed(7)) * 0.05
    m = QuantLinear.from_weight(w, None, bits, True, "per_group" if bits == 4 else "per_channel",
                                64 if bits == 4 else None)
    x = torch.randn(2, 576)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = m(x)
        torch.set_num_threads(2)
        two = m(x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
    torch.testing.assert_close(two, F.linear(x, m.dequantized_weight()), rtol=1e-5, atol=1e-5)


def test_a_lock_file_left_by_a_killed_build_is_cleared_not_waited_on(tmp_path):
    # torch waits while build_dir/lock exists; a build killed inside torch's load leaves it behind
    (tmp_path / "lock").write_text("")
    with kernels._build_lock(tmp_path):
        assert not (tmp_path / "lock").exists()
    assert (tmp_path / "build.flock").is_file()  # the OS lock's file stays; the OS frees the lock itself


def test_the_os_lock_keeps_a_second_builder_out_until_the_first_ends(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    with kernels._build_lock(tmp_path), open(tmp_path / "build.flock") as other:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(tmp_path / "build.flock") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again


def test_the_kernels_are_built_in_a_folder_of_their_own_per_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    here = kernels.build_dir()
    assert here.parent.parent == tmp_path and here.name.startswith(kernels.NAME + "-")
    assert "avx2" in kernels.cpu_features() or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512")
    monkeypatch.setattr(kernels, "cpu_features", lambda: "fpu sse sse2")  # another CPU: its -march=native differs
    assert kernels.build_dir() != here and kernels.build_dir().parent == here.parent
