"""Regression tests for edge-case bugs of the C kernels found by adversarial testing, on every SIMD level
(each fails on the revision before its fix); the mean over a zero weight sum is in test_regressions.py."""

import numpy as np
import pytest
from scipy.special import rel_entr, softmax as sp_softmax

import fastlm
from fastlm import reference as ref


@pytest.mark.parametrize("dtype, gap", [(np.float32, 100.0), (np.float32, 700.0), (np.float64, 720.0)])
def test_kl_inf_where_q_is_zero_and_p_underflows_the_fast_exp(simd, dtype, gap):
    """KL = +inf where q's logit is -inf and p's probability is positive in float64 but below the fast
    exp's range (87-745 below the max in float32, 709-745 in float64); it was 0."""
    p = np.array([[0.0, -gap, 1.0] * 700], dtype)  # 2100 entries: more than one 2048-block
    q = p.copy()
    q[0, 1] = -np.inf
    want = rel_entr(sp_softmax(p.astype(np.float64), axis=-1), sp_softmax(q.astype(np.float64), axis=-1)).sum()
    assert want == np.inf
    assert ref.kl_divergence(p, q)[0] == np.inf
    assert fastlm.kl_divergence(p, q)[0] == np.inf


def test_kl_stays_finite_where_p_is_zero_in_float64(simd):
    p = np.array([0.0, -800.0, -1.0])  # e^-800 is 0 in float64: that term adds nothing
    q = np.array([0.0, -np.inf, -2.0])
    np.testing.assert_allclose(fastlm.kl_divergence(p, q), ref.kl_divergence(p, q), rtol=1e-12)
    assert np.isfinite(fastlm.kl_divergence(p, q))


@pytest.mark.parametrize("cap, temperature, bound", [(30.0, 1e-2, 1.5e-5), (30.0, 1e-3, 1.2e-4), (50.0, 1.0, 3e-7)])
def test_float32_softcap_gradient_is_accurate_near_zero(simd, cap, temperature, bound):
    """float32 softcap: tanh is accurate relative to its value near 0, so the gradient at small
    |x| / cap and low temperature stays within float32 rounding of the logits z = v / T (as torch's);
    1 - 2 / (e^2x + 1) was 9x worse (4.5e-5 of the max at cap 30, T = 1e-2)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1000)).astype(np.float32)
    t = rng.integers(0, 1000, 64)
    _, g = fastlm.cross_entropy_with_grad(x, t, softcap=cap, temperature=temperature)
    _, g64 = ref.cross_entropy_with_grad(x.astype(np.float64), t, softcap=cap, temperature=temperature)
    assert np.abs(g - g64).max() <= bound * np.abs(g64).max()
    loss = fastlm.cross_entropy(x, t, softcap=cap, temperature=temperature)
    assert abs(loss - ref.cross_entropy(x.astype(np.float64), t, softcap=cap, temperature=temperature)) <= 1e-6 * abs(loss) + 1e-6



def test_top_k_beyond_the_row_keeps_all():
    """top_k_filter passed k to C as a double and converted it to int64 there: k = 2^63 - 1 (a legal int64)
    rounds to 2^63, whose conversion is undefined behaviour (UBSan reported it). k >= the row length now
    keeps the row without converting."""
    x = np.random.default_rng(0).standard_normal((3, 50))
    for dtype in (np.float32, np.float64):
        for k in (50, 51, 2**62, 2**63 - 1):
            np.testing.assert_array_equal(fastlm.top_k_filter(x.astype(dtype), k), x.astype(dtype))
        kept = np.isfinite(fastlm.top_k_filter(x.astype(dtype), 5)).sum(axis=1)
        np.testing.assert_array_equal(kept, [5, 5, 5])
