"""softmax / log_softmax / logsumexp against fastlm.reference, on every SIMD level."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import SIZES, close, logits_like
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastlm
from fastlm import reference as ref

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("V", SIZES)
def test_matches_reference(simd, rng, dtype, V):
    x = logits_like(rng, (3, V), dtype)
    close(fastlm.softmax(x), ref.softmax(x), dtype)
    close(fastlm.log_softmax(x), ref.log_softmax(x), dtype, scale=10)
    close(fastlm.logsumexp(x), ref.logsumexp(x), dtype)
    assert fastlm.softmax(x).dtype == dtype and fastlm.logsumexp(x).dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_temperature_axis_and_leading_dims(simd, rng, dtype):
    x = logits_like(rng, (2, 3, 37, 5), dtype)
    for axis in (-1, 0, 1, 2, -2):
        for T in (0.3, 1.0, 2.5):
            close(fastlm.softmax(x, axis=axis, temperature=T), ref.softmax(x, axis=axis, temperature=T), dtype)
            close(fastlm.log_softmax(x, axis, temperature=T), ref.log_softmax(x, axis, temperature=T), dtype, 10)
            close(fastlm.logsumexp(x, axis, temperature=T), ref.logsumexp(x, axis, temperature=T), dtype, 10)


def test_wide_dynamic_range_and_block_jumps(simd, rng):
    """Rows whose max appears late, by small and by huge jumps (> 64) across 2048-element blocks."""
    for dtype in DTYPES:
        x = logits_like(rng, (6, 9000), dtype, scale=1.0)
        x[1, 5000] = 30.0     # small jump in a later block
        x[2, 8999] = 500.0    # huge jump in the last block
        x[3, :2048] = -1e4    # first block far below the rest
        x[4] = np.linspace(-300, 300, 9000)
        x[5, ::3] = -np.inf
        close(fastlm.softmax(x), ref.softmax(x), dtype)
        close(fastlm.logsumexp(x), ref.logsumexp(x), dtype, 100)
        close(fastlm.log_softmax(x), ref.log_softmax(x), dtype, 1000)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_accuracy_over_its_range(simd, dtype):
    """softmax([x, 0]) = e^x / (1 + e^x) exercises the vector exp over [-87, 0]; relative error in ulps."""
    x = np.linspace(-87, 0, 40001).astype(dtype)
    pairs = np.stack([x, np.zeros_like(x)], axis=1)
    got = fastlm.softmax(pairs)[:, 0].astype(np.float64)
    want = ref.softmax(pairs)[:, 0]
    ulp = np.spacing(want.astype(dtype)).astype(np.float64)
    assert np.max(np.abs(got - want) / ulp) <= 4


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values(simd, dtype):
    inf, nan = np.inf, np.nan
    x = np.array([[0.0, -inf, 1.0, -inf],
                  [-inf, -inf, -inf, -inf],
                  [0.0, nan, 1.0, 2.0],
                  [inf, 1.0, 2.0, 3.0],
                  [inf, nan, 0.0, 0.0],
                  [1e30 if dtype == np.float64 else 3e38, 0.0, -1e30, 5.0]], dtype)
    p = fastlm.softmax(x)
    np.testing.assert_array_equal(np.isnan(p), np.isnan(ref.softmax(x)))
    assert p[0, 1] == 0 and p[0, 3] == 0          # -inf: probability exactly 0
    close(p[[0, 5]], ref.softmax(x)[[0, 5]], dtype)
    lp = fastlm.log_softmax(x)
    assert lp[0, 1] == -inf
    np.testing.assert_array_equal(np.isnan(lp), np.isnan(ref.log_softmax(x)))
    lse = fastlm.logsumexp(x)
    np.testing.assert_array_equal(lse[[1, 3]], [-inf, inf])
    assert np.isnan(lse[2]) and np.isnan(lse[4])
    close(lse[[0, 5]], ref.logsumexp(x)[[0, 5]], dtype)


def test_empty_and_tiny(simd):
    assert fastlm.softmax(np.zeros((0, 5), np.float32)).shape == (0, 5)
    assert fastlm.softmax(np.zeros((4, 0))).shape == (4, 0)
    np.testing.assert_array_equal(fastlm.logsumexp(np.zeros((3, 0))), ref.logsumexp(np.zeros((3, 0))))
    assert fastlm.softmax(np.array([3.0]))[0] == 1.0
    assert fastlm.logsumexp(np.array([2.0, 2.0])) == pytest.approx(2 + np.log(2))
    assert np.ndim(fastlm.logsumexp(np.array([2.0, 2.0]))) == 0


def test_layouts_out_and_in_place(simd, rng):
    base = logits_like(rng, (8, 40, 66), np.float32)
    views = {
        "sliced rows": base[::2, 3:30, :],
        "non-contiguous class axis": base[:, :, ::2],
        "transposed": base.transpose(1, 0, 2),
        "fortran": np.asfortranarray(base),
        "negative stride": base[::-1],
    }
    for name, v in views.items():
        close(fastlm.softmax(v), ref.softmax(v), np.float32)
        close(fastlm.logsumexp(v, axis=1), ref.logsumexp(v, axis=1), np.float32)
    ro = base.copy()
    ro.flags.writeable = False
    close(fastlm.log_softmax(ro), ref.log_softmax(ro), np.float32, 10)
    out = np.empty_like(base)
    assert fastlm.softmax(base, out=out) is out
    close(out, ref.softmax(base), np.float32)
    x = base.copy()
    want = ref.softmax(x)
    assert fastlm.softmax(x, out=x) is x
    close(x, want, np.float32)
    # out overlapping the input without being it: computed through a temporary
    y = base.copy()
    want = ref.log_softmax(y[:, 1:, :])
    fastlm.log_softmax(y[:, 1:, :], out=y[:, :-1, :])
    close(y[:, :-1, :], want, np.float32, 10)
    # strided out
    big = np.zeros((8, 40, 132), np.float32)
    fastlm.softmax(base, out=big[:, :, ::2])
    close(big[:, :, ::2], ref.softmax(base), np.float32)


def test_float16_and_lists(simd, rng):
    x = logits_like(rng, (5, 100), np.float16)
    p = fastlm.softmax(x)
    assert p.dtype == np.float16
    close(p, ref.softmax(x), np.float16)
    assert fastlm.softmax([[1.0, 2.0, 3.0]]).dtype == np.float64
    close(fastlm.softmax([[1.0, 2.0, 3.0]]), ref.softmax([[1.0, 2.0, 3.0]]), np.float64)
    big_endian = logits_like(rng, (3, 20), ">f4")
    close(fastlm.softmax(big_endian), ref.softmax(big_endian), np.float32)


def test_threads_are_deterministic(rng):
    x = logits_like(rng, (97, 3001), np.float32)
    one = fastlm.log_softmax(x, num_threads=1)
    for n in (2, 3, 8):
        np.testing.assert_array_equal(fastlm.log_softmax(x, num_threads=n), one)
        np.testing.assert_array_equal(fastlm.logsumexp(x, num_threads=n), fastlm.logsumexp(x, num_threads=1))


def test_bad_input():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match="x must be a float"):
        fastlm.softmax(np.zeros((2, 3), np.int64))
    with pytest.raises(TypeError, match="x must be a float"):
        fastlm.log_softmax(np.zeros((2, 3), np.complex64))
    with pytest.raises(TypeError, match="x must be a float"):
        fastlm.logsumexp(["a", "b"])
    for T in (0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="temperature"):
            fastlm.softmax(x, temperature=T)
    with pytest.raises(np.exceptions.AxisError):
        fastlm.softmax(x, axis=2)
    with pytest.raises(ValueError, match="at least one dimension"):
        fastlm.softmax(np.float32(1.0))
    out = np.full((2, 3), 7.0, np.float32)
    with pytest.raises(ValueError, match=r"out has shape \(3, 2\)"):
        fastlm.softmax(x, out=np.empty((3, 2), np.float32))
    with pytest.raises(TypeError, match="out has dtype float64"):
        fastlm.softmax(x, out=np.empty((2, 3)))
    with pytest.raises(ValueError, match="temperature"):
        fastlm.softmax(x, temperature=0, out=out)
    np.testing.assert_array_equal(out, 7.0)  # nothing written
    ro = np.empty((2, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fastlm.softmax(x, out=ro)
    with pytest.raises(ValueError, match="num_threads"):
        fastlm.softmax(x, num_threads=0)
    with pytest.raises(TypeError):
        fastlm.softmax(x, 0.5)  # axis must be an integer


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=40),
                  elements=st.floats(-200, 200)),
       st.floats(-1e3, 1e3))
def test_properties(x, c):
    p = fastlm.softmax(x)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)
    assert (p >= 0).all()
    np.testing.assert_allclose(fastlm.softmax(x + c), p, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fastlm.logsumexp(x + c), fastlm.logsumexp(x) + c, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(np.exp(fastlm.log_softmax(x)), p, rtol=1e-12, atol=1e-300)


def test_forced_level_by_environment():
    """FASTLM_SIMD=scalar makes scalar the active level in a fresh process; an unknown value warns."""
    code = "import fastlm, fastlm._kernels as k; print(k.simd_active())"
    env = {"FASTLM_SIMD": "scalar", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "scalar"
    env["FASTLM_SIMD"] = "sse9"
    out = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert "FASTLM_SIMD='sse9'" in out.stderr
    assert out.stdout.strip() == fastlm._kernels.simd_supported()[-1]


def test_against_torch(rng):
    torch = pytest.importorskip("torch")
    x = logits_like(rng, (4, 7, 301), np.float32)
    xt = torch.from_numpy(x.astype(np.float64))
    for dim in (-1, 1, 0):
        close(fastlm.softmax(x, axis=dim), torch.softmax(xt, dim).numpy(), np.float32)
        close(fastlm.log_softmax(x, axis=dim), torch.log_softmax(xt, dim).numpy(), np.float32, 10)
        close(fastlm.logsumexp(x, axis=dim), torch.logsumexp(xt, dim).numpy(), np.float32, 10)
    special = torch.tensor([[np.inf, 1.0], [-np.inf, -np.inf], [np.nan, 0.0]], dtype=torch.float64)
    np.testing.assert_array_equal(np.isnan(fastlm.softmax(special.numpy())), np.isnan(torch.softmax(special, -1).numpy()))
    np.testing.assert_array_equal(fastlm.logsumexp(special.numpy()), torch.logsumexp(special, -1).numpy())


@pytest.mark.parametrize("level", fastlm._kernels.simd_supported())
def test_each_level_forced_by_environment_matches_reference(level):
    """FASTLM_SIMD=<level> in a fresh process selects that level, and its results match the reference."""
    code = (
        "import numpy as np, fastlm, fastlm._kernels as k\n"
        "from fastlm import reference as ref\n"
        "x = np.random.default_rng(0).standard_normal((4, 3001)).astype(np.float32) * 5\n"
        "t = np.arange(4) * 7\n"
        "assert np.allclose(fastlm.softmax(x), ref.softmax(x), rtol=2e-5, atol=1e-7)\n"
        "assert np.isclose(fastlm.cross_entropy(x, t), ref.cross_entropy(x, t), rtol=2e-5)\n"
        "print(k.simd_active())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env={"FASTLM_SIMD": level, "PATH": ""},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == level


def test_unaligned_and_byte_swapped_arrays(simd, rng):
    buf = np.zeros(4 * 2 * 10 + 1, np.uint8)[1:].view(np.float32).reshape(2, 10)
    buf[...] = rng.standard_normal((2, 10))
    assert not buf.flags.aligned
    close(fastlm.softmax(buf), ref.softmax(buf), np.float32)
    close(fastlm.logsumexp(buf), ref.logsumexp(buf), np.float32)
    x = logits_like(rng, (3, 50), np.float32).astype(">f4")
    out = np.empty_like(x)
    assert fastlm.softmax(x, out=out) is out
    close(out, ref.softmax(x), np.float32)
    want = ref.log_softmax(x)
    fastlm.log_softmax(x, out=x)
    close(x, want, np.float32, 10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_temperature_applied_after_the_max(simd, rng, dtype):
    """Large logits with T != 1: the temperature must not scale them before the max is subtracted."""
    x = logits_like(rng, (4, 3000), dtype, 1.0) + dtype(1000)
    for T in (0.7, 3.0):
        close(fastlm.softmax(x, temperature=T), ref.softmax(x, temperature=T), dtype)
        close(fastlm.log_softmax(x, temperature=T), ref.log_softmax(x, temperature=T), dtype, 10)
        close(fastlm.logsumexp(x, temperature=T), ref.logsumexp(x, temperature=T), dtype, 1e4)
    big = np.array([[np.finfo(dtype).max, 0.0]], dtype)  # x / T overflows the dtype
    np.testing.assert_array_equal(fastlm.softmax(big, temperature=0.5), [[1.0, 0.0]])
    with pytest.raises(ValueError, match="temperature"):
        fastlm.softmax(big, temperature=1e-310)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiny_probabilities_after_large_rises(simd, dtype):
    """A block raises the max by 64 (summed in one pass), the next by 65 (a fresh pass): the stored
    terms of the first are rescaled by e^-129 without being flushed."""
    x = np.zeros((1, 6144), dtype)
    x[0, 2048], x[0, 4096] = 64, 129
    want = ref.softmax(x).astype(dtype)  # e^-129 is 0 in float32, e^-65 is not
    assert want[0, 2048] > 0
    close(fastlm.softmax(x), want, dtype, scale=0)
    y = x.copy()
    fastlm.softmax(y, out=y)
    close(y, want, dtype, scale=0)


def test_many_rises_of_the_max_rebase_the_stored_terms(simd):
    """More rises of the max than the bookkeeping table holds (one per 2048-element block)."""
    V = 2048 * 300
    x = (np.arange(V) // 2048 * 0.5).astype(np.float32)[None]
    x[0, ::7] -= 3.0
    close(fastlm.softmax(x), ref.softmax(x).astype(np.float32), np.float32, scale=0)
    y = x.copy()
    fastlm.cross_entropy_with_grad(y, [V - 1], grad_out=y)
    close(y, ref.cross_entropy_with_grad(x, [V - 1])[1].astype(np.float32), np.float32, scale=0)
