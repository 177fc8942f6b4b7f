"""fastlm.linear_cross_entropy(_with_grad), the chunked NumPy twin, against the full-logits reference."""

import numpy as np
import pytest

import fastlm
from fastlm import reference as ref

OPTIONS = [dict(), dict(label_smoothing=0.2), dict(class_weight=True), dict(z_loss=0.02),
           dict(softcap=5.0, temperature=0.7), dict(ignore_index=3)]


def data(dtype, N=41, D=12, V=70, seed=0, bias=True):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((N, D)).astype(dtype)
    W = (rng.standard_normal((V, D)) / 2).astype(dtype)
    b = rng.standard_normal(V).astype(dtype) if bias else None
    t = rng.integers(0, V, N)
    t[[1, 5]] = -100
    cw = rng.random(V) + 0.5
    return h, W, b, t, cw


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", OPTIONS, ids=str)
@pytest.mark.parametrize("chunk_size", [None, 1, 8, 1000])
def test_matches_reference(simd, dtype, reduction, opts, chunk_size):
    h, W, b, t, cw = data(dtype)
    o = dict(opts)
    o["class_weight"] = cw if o.pop("class_weight", False) else None
    t[t == -100] = o.get("ignore_index", -100)
    got = fastlm.linear_cross_entropy_with_grad(h, W, t, bias=b, reduction=reduction, chunk_size=chunk_size, **o)
    want = ref.linear_cross_entropy_with_grad(h, W, t, bias=b, reduction=reduction, **o)
    rtol = 2e-5 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(got[0], want[0], rtol=rtol, atol=rtol)
    for g, w in zip(got[1:], want[1:]):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * np.abs(w).max())
    loss = fastlm.linear_cross_entropy(h, W, t, bias=b, reduction=reduction, chunk_size=chunk_size, **o)
    np.testing.assert_allclose(loss, want[0], rtol=rtol, atol=rtol)


def test_leading_dims_no_bias_float16_and_threads():
    h, W, _, t, _ = data(np.float64, N=24, bias=False)
    got = fastlm.linear_cross_entropy_with_grad(h.reshape(4, 6, -1), W, t.reshape(4, 6), chunk_size=5, num_threads=2)
    want = ref.linear_cross_entropy_with_grad(h, W, t)
    assert got[3] is None and got[1].shape == (4, 6, h.shape[1])
    np.testing.assert_allclose(got[1].reshape(h.shape), want[1], rtol=1e-11, atol=1e-14)
    g16 = fastlm.linear_cross_entropy_with_grad(h.astype(np.float16), W.astype(np.float16), t)
    assert g16[1].dtype == np.float16
    w16 = ref.linear_cross_entropy_with_grad(h.astype(np.float16), W.astype(np.float16), t)
    np.testing.assert_allclose(g16[0], w16[0], rtol=1e-3)


def test_all_ignored_and_zero_weight_sum():
    h, W, b, t, cw = data(np.float64)
    t[:] = -100
    loss, dh, dW, db = fastlm.linear_cross_entropy_with_grad(h, W, t, bias=b)
    assert np.isnan(loss) and not dh.any() and not dW.any() and not db.any()
    h, W, b, t, cw = data(np.float64)
    cw[t[t >= 0]] = 0  # the targets' weights sum to 0: NaN, as torch
    loss, dh, dW, db = fastlm.linear_cross_entropy_with_grad(h, W, t, bias=b, class_weight=cw)
    want = ref.linear_cross_entropy_with_grad(h, W, t, bias=b, class_weight=cw)
    assert np.isnan(loss) and np.isnan(want[0])
    np.testing.assert_array_equal(np.isnan(dh), np.isnan(want[1]))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(hidden=np.zeros((3, 4))), ValueError, "hidden has shape"),
    (dict(weight=np.zeros(6)), ValueError, r"weight must be \(V, D\)"),
    (dict(targets=np.zeros(4, np.int64)), ValueError, "targets has shape"),
    (dict(targets=np.array([0, 1, 7, 0, 0])), ValueError, r"targets\[2\] = 7"),
    (dict(bias=np.zeros(5)), ValueError, "bias has shape"),
    (dict(class_weight=np.ones(3)), ValueError, "class_weight has shape"),
    (dict(chunk_size=0), ValueError, "chunk_size"),
    (dict(reduction="avg"), ValueError, "reduction"),
    (dict(weight=np.zeros((7, 5), np.float32)), TypeError, "same dtype"),
    (dict(targets=np.zeros(5)), TypeError, "targets must be an integer"),
])
def test_errors(kwargs, error, match):
    args = dict(hidden=np.zeros((5, 5)), weight=np.zeros((7, 5)), targets=np.zeros(5, np.int64))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        fastlm.linear_cross_entropy_with_grad(args.pop("hidden"), args.pop("weight"), args.pop("targets"), **args)
